{%- from tpldir ~ "/map.jinja" import server, replicas, replication with context %}

include:
  - .service

{#- The primary's side of streaming replication (salt/db_replica): the
    replication role (its password read on the minion by the state) and one
    physical slot per replica of this environment (pillar hpd:peers:db_replica),
    so the primary keeps the WAL a replica has not received yet; the slot of a
    replica that left the environment is dropped, or it would keep WAL for
    ever. pg_hba.conf (db.config) admits the role from the db and db_replica
    hosts. #}
{%- if server.engine == 'postgresql' %}
{%-   if replicas %}
db-replication-user-present:
  hpd_db.user_present:
    - name: {{ replication.replication_user }}
    - secret: db_replica:replication_password
    - replication: True
    - require:
      - sls: db.service
{%-   endif %}

db-replication-slots-managed:
  hpd_db.slots_managed:
    - name: physical replication slots
    - replicas: {{ replicas | json }}
    - require:
      - sls: db.service
{%- endif %}
