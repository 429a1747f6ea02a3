# twemproxy (nutcracker) on every app host: the site's one way to the cache,
# on 127.0.0.1 (ports: pillar twemproxy:ports), sharding keys over the cache
# hosts of the environment and ejecting one that fails.
include:
  - .package
  - .config
  - .service
