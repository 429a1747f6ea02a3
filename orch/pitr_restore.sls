# Point-in-time restore of an environment's primary, and what it takes to
# be whole again:
#
#   salt-run state.orchestrate orch.pitr_restore \
#     pillar='{"env": "production", "target": "2026-11-30 05:50:00+00"}'
#
# 1. The primary (the host with the db role) restored to `target` by
#    hpd_backup.pitr_restore: everything written after it is gone.
# 2. Its highstate: the replicas' slots (a restore leaves none) and a full
#    pgBackRest backup of the new timeline (salt/db/pitr.sls).
# 3. Each replica went past `target`: marked hpd-rebuild and highstated, it
#    is rebuilt from the restored primary (salt/db_replica).
{%- from "orch/db_hosts.jinja" import env, primaries, replicas, data_dir with context %}
{%- set target = pillar.get('target') %}
{%- if not target %}
{{-   raise('pillar target is required: the time to restore to, e.g. "2026-11-30 05:50:00+00"') }}
{%- endif %}
{%- if primaries | length != 1 %}
{{-   raise('pillar env: ' ~ env ~ ' must have one db host to restore, not ' ~ primaries | json) }}
{%- endif %}
{%- set primary = primaries[0] %}

db-pitr-{{ primary }}-restored:
  salt.function:
    - name: hpd_backup.pitr_restore
    - tgt: {{ primary }}
    - arg:
      - {{ target | json }}
    - kwarg:
        timeout: 300

db-pitr-{{ primary }}-highstated:
  salt.state:
    - tgt: {{ primary }}
    - highstate: True
    - require:
      - salt: db-pitr-{{ primary }}-restored
{%- for replica in replicas %}

db-pitr-{{ replica }}-marked:
  salt.function:
    - name: file.touch
    - tgt: {{ replica }}
    - arg:
      - {{ data_dir }}/hpd-rebuild
    - require:
      - salt: db-pitr-{{ primary }}-highstated

db-pitr-{{ replica }}-rebuilt:
  salt.state:
    - tgt: {{ replica }}
    - highstate: True
    - require:
      - salt: db-pitr-{{ replica }}-marked
{%- endfor %}
