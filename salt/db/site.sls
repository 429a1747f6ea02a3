{%- from tpldir ~ "/map.jinja" import db, server, clients with context %}

include:
  - .service

{#- The site's role and database. The password is read on the minion by the
    state itself (hpd_db.user_present), so it is in no state data or output.
    MariaDB: that state also creates the database and grants it to the user at
    each app and worker host. #}
db-site-user-present:
  hpd_db.user_present:
    - name: {{ db.user }}
    - engine: {{ server.engine }}
    - secret: db:password
{%- if server.engine == 'mysql' %}
    - hosts: {{ clients | json }}
    - database: {{ db.name }}
{%- endif %}
    - require:
      - sls: db.service

{%- if server.engine == 'postgresql' %}
db-site-database-present:
  postgres_database.present:
    - name: {{ db.name }}
    - owner: {{ db.user }}
    - user: {{ server.user }}
    - require:
      - hpd_db: db-site-user-present
{%- endif %}
