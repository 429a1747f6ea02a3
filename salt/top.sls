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
  'hpd:roles:cache':
    - match: pillar
    - cache
  'hpd:roles:app':
    - match: pillar
    - twemproxy
    - backup.media_source
  'hpd:roles:backup':
    - match: pillar
    - backup
