# cache: memcached and redis (either or both: pillar cache:<kind>:enabled) on the
# hosts with the cache role, listening on the host's private address only. The
# site reaches them through twemproxy on its app host (salt/twemproxy).
include:
  - .package
  - .config
  - .service
