# The production environment. Secrets (monitoring:web:secret_key, ...) come
# from pillar `secrets` (pillar/top.sls), never from this repository.
highperf:
  graphite:
    interval: 60
    timeout: 5
