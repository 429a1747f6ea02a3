# Failover: the environment's replica becomes its primary.
#
#   salt-run state.orchestrate orch.db_failover pillar='{"env": "production"}'
#
# 1. The old primary (the host with the db role) is fenced: PostgreSQL stopped
#    and its service masked, and standby.signal in its data directory, so that
#    even a start by hand comes up read-only; the marker hpd-rebuild says it
#    must be rebuilt. Nothing is promoted unless the fence succeeded: a primary
#    that still takes writes beside a promoted replica splits the database in
#    two (the site's hosts would keep writing to whichever they reach). When
#    the old primary cannot be fenced from here (its minion does not answer),
#    make sure it cannot come back (power it off, detach its disk or its
#    network) and run the failover again with pillar `force: true`: the fence
#    is then tried, and the promotion goes ahead whatever its result.
# 2. The replica (the env's db_replica host; pillar `to` picks one when there
#    are several) is promoted (pg_promote: waits until it takes writes).
# 3. db_primary.yaml beside the master's inventory.yaml names it as the env's
#    primary: pillar/inventory.sls then gives it the db role and the old
#    primary db_replica, and hpd:peers:db, where the app and worker hosts find
#    the primary, names it.
# 4. Every host of the env refreshes its pillar. The env's app and worker
#    hosts are highstated: their states render the primary they connect to
#    from hpd:peers:db and reload the site gracefully when it changed (their
#    roles decide how). Then the new primary is highstated as db (its slots,
#    pgBackRest, backup user, a full backup).
# The fenced host is rebuilt as a replica of the new one by its next
# highstate (a fresh base backup: whatever it took after the replica's last
# received WAL is discarded).
{%- from "orch/db_hosts.jinja" import env, root, primaries, replicas, clients, service, data_dir with context %}
{%- set to = pillar.get('to') or (replicas[0] if replicas | length == 1 else none) %}
{%- if to not in replicas %}
{{-   raise('pillar to: name the db_replica host of ' ~ env ~ ' to promote, one of ' ~ replicas | json) }}
{%- endif %}

{%- for old in primaries %}
db-failover-{{ old }}-fenced:
  salt.function:
    - name: cmd.run
    - tgt: {{ old }}
    - arg:
      - >-
        systemctl mask --now {{ service }}
        && touch {{ data_dir }}/standby.signal {{ data_dir }}/hpd-rebuild
{%- endfor %}

db-failover-{{ to }}-promoted:
  salt.function:
    - name: cmd.run
    - tgt: {{ to }}
    - arg:
      - runuser -u postgres -- psql -XAtqc "SELECT pg_promote()" | grep -qx t
    - kwarg:
        cwd: /
{%- if primaries and pillar.get('force') is not sameas true %}
    - require:
{%-   for old in primaries %}
      - salt: db-failover-{{ old }}-fenced
{%-   endfor %}
{%- endif %}

db-failover-primary-named:
  file.serialize:
    - name: {{ root }}/db_primary.yaml
    - serializer: yaml
    - dataset:
        {{ env }}: {{ to }}
    - merge_if_exists: True
    - mode: '0644'
    - require:
      - salt: db-failover-{{ to }}-promoted

db-failover-pillar-refreshed:
  salt.function:
    - name: saltutil.refresh_pillar
    - tgt: I@hpd:env:{{ env }}
    - tgt_type: compound
    - kwarg:
        wait: True
    - require:
      - file: db-failover-primary-named
{%- if clients %}

db-failover-clients-repointed:
  salt.state:
    - tgt: {{ clients | join(',') }}
    - tgt_type: list
    - highstate: True
    - require:
      - salt: db-failover-pillar-refreshed
{%- endif %}

db-failover-{{ to }}-highstated:
  salt.state:
    - tgt: {{ to }}
    - highstate: True
    - require:
      - salt: db-failover-pillar-refreshed
