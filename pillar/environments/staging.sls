# The staging environment: production's twin for rehearsals. No secret here:
# each role's secrets (monitoring:web:secret_key, ...) are in
# secrets/staging/<role>.sls in the operator's private pillar root, given only
# to the hosts with that role (pillar/top.sls).
highperf:
  graphite:
    interval: 60
    timeout: 5
