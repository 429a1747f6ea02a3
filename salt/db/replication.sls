{%- from tpldir ~ "/map.jinja" import server, replicas, replication with context %}

include:
  - .service

{#- The primary's side of streaming replication (salt/db_replica): the
    replication role (its password read on the minion by the state) and one
    physical slot per replica of this environment (pillar hpd:peers:db_replica),
    so the primary keeps the WAL a replica has not received yet; pg_hba.conf
    (db.config) admits the role from the db and db_replica hosts. #}
{%- if server.engine == 'postgresql' and replicas %}
db-replication-user-present:
  hpd_db.user_present:
    - name: {{ replication.replication_user }}
    - secret: db_replica:replication_password
    - replication: True
    - require:
      - sls: db.service

{%-   for replica in replicas %}
{%-     set slot = salt['hpd.pg_slot_name'](replica) %}

db-replication-slot-{{ slot }}-present:
  cmd.run:
    - name: psql -XAtqc "SELECT pg_create_physical_replication_slot('{{ slot }}')"
    - runas: {{ server.user }}
    - cwd: /
    - unless: >-
        test -n "$(psql -XAtqc "SELECT 1 FROM pg_replication_slots
        WHERE slot_name = '{{ slot }}'")"
    - require:
      - sls: db.service
{%-   endfor %}
{%- endif %}
