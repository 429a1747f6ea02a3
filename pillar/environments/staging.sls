# The staging environment: production's twin for rehearsals. Secrets
# (monitoring:web:secret_key, ...) come from pillar `secrets` (pillar/top.sls).
highperf:
  graphite:
    interval: 60
    timeout: 5
