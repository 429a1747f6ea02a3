# The dev environment: a developer's farm, the lab. It wins over the role
# pillars. Its throw-away secrets are in secrets/dev/<role>.sls, each given only
# to the hosts with that role (pillar/top.sls).
highperf:
  graphite:
    # Short, so a test sees a few points within a minute.
    interval: 5
    timeout: 2
site:
  domains: [www.hpd.test, hpd.test]
varnish:
  # The naked domain to www.
  redirects:
    - host: hpd.test
      location: https://www.hpd.test
alerts:
  # The machine that runs the dev master, on the address it listens on (in the
  # lab, its bridge): a developer (or a test) may listen there; nothing is lost
  # when nobody does (the master logs every alert).
  webhook:
    url: http://{{ opts['interface'] }}:8470/hpd-alerts
  # Lab hosts see the machine's load, not their own (no lxcfs).
  load:
    enabled: false
  # Short, so a test sees an alert and its resolution within seconds.
  disk:
    interval: 5
  ports:
    interval: 5
  errors:
    interval: 5
