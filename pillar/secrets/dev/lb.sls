# The lb role's secrets in the dev environment: none. Unset, the TLS key (and its
# certificate) is made on the lb host itself, self-signed (salt/lb/config.sls);
# other environments must set both (secrets/<env>/lb.sls, pillar lb:tls).
lb:
  tls:
    key: null
