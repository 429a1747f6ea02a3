{%- from "db/map.jinja" import server with context %}
{%- from tpldir ~ "/map.jinja" import primary with context %}

{#- The db role's postgresql.conf and pg_hba.conf (db.config), and the
    password the replica streams with, in the postgres user's passfile only
    (0600, written on the minion from the unmasked pillar). #}
include:
  - .package
  - db.config

db_replica-passfile-file-managed:
  file.managed:
    - name: /var/lib/postgresql/.pgpass
    - source: salt://{{ tpldir }}/files/pgpass.jinja
    - template: jinja
    - context:
        primary: {{ primary | json }}
        port: {{ server.port }}
    - user: {{ server.user }}
    - group: {{ server.user }}
    - mode: '0600'
    - show_changes: False
    - require:
      - sls: db.package
