# lb: haproxy in front of the app hosts (salt/lb/files/haproxy.cfg.jinja): TLS
# with the certificate from pillar lb:tls (self-signed in dev), plain HTTP
# redirected to https, HSTS; requests through Varnish when the host has the
# varnish role; backend `app` from the inventory (never a host's claim); the runtime
# API on /run/haproxy/admin.sock (root only; /usr/local/sbin/hpd-haproxy).
include:
  - .package
  - .config
  - .service
