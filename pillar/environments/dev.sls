# The dev environment: a developer's farm, the lab. It wins over the role
# pillars; secrets of staging and production come from pillar `secrets`
# (pillar/top.sls), never from this repository.
highperf:
  graphite:
    # Short, so a test sees a few points within a minute.
    interval: 5
    timeout: 2

monitoring:
  web:
    # A dev-only key, public in this repository; refused outside dev.
    secret_key: dev-only-graphite-web-key-not-a-secret-0123456789
