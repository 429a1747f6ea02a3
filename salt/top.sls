# Roles come from pillar `hpd:roles`, which the master sets from its inventory
# (pillar/top.sls), so a minion cannot claim a role by setting a grain. The
# `roles` and `env` grains mirror the inventory for `salt -G` convenience only.
base:
  'hpd:env:*':
    - match: pillar
    - common
    - heal
  'hpd:roles:monitoring':
    - match: pillar
    - monitoring
  'hpd:roles:db':
    - match: pillar
    - db
  'hpd:roles:db_replica':
    - match: pillar
    - db_replica
  'hpd:roles:cache':
    - match: pillar
    - cache
  'hpd:roles:app':
    - match: pillar
    - twemproxy
    - backup.media_source
    - app
  'hpd:roles:worker':
    - match: pillar
    - twemproxy
    - worker
  'hpd:roles:backup':
    - match: pillar
    - backup
  'hpd:roles:lb':
    - match: pillar
    - lb
  'hpd:roles:varnish':
    - match: pillar
    - varnish
  'hpd:roles:cdn':
    - match: pillar
    - cdn
  {#- The app hosts push static files to the CDN origin where the environment has one. #}
  'I@hpd:roles:app and I@hpd:peers:cdn:*':
    - match: compound
    - cdn.push_client
