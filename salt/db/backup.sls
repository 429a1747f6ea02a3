{%- from tpldir ~ "/map.jinja" import server, backup_clients, backup_user with context %}

include:
  - .service

{#- The read-only user the backup hosts of this environment dump the site's
    database as (salt/backup): pg_read_all_data reads every table and writes
    none, so a backup host cannot change or delete the data. Its password is
    the backup role's secret, read on the minion by the state. #}
{%- if server.engine == 'postgresql' and backup_clients %}
db-backup-user-present:
  hpd_db.user_present:
    - name: {{ backup_user }}
    - secret: backup:db_password
    - groups: pg_read_all_data
    - require:
      - sls: db.service
{%- endif %}
