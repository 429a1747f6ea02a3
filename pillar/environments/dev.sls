# The dev environment: a developer's farm, the lab. It wins over the role
# pillars. Its throw-away secrets are in secrets/dev/<role>.sls, each given only
# to the hosts with that role (pillar/top.sls).
highperf:
  graphite:
    # Short, so a test sees a few points within a minute.
    interval: 5
    timeout: 2
