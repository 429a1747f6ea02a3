{%- from tpldir ~ "/map.jinja" import db, server, clients, backup_clients, backup_user,
    replication_clients, replication with context %}

include:
  - .package

{%- if server.engine == 'postgresql' %}

{#- Debian's cluster reads conf.d after postgresql.conf (include_dir), so these
    settings win over the stock file, which stays as the package ships it. #}
db-postgresql-config-file-managed:
  file.managed:
    - name: {{ server.conf_dir }}/conf.d/hpd.conf
    - source: salt://{{ tpldir }}/files/postgresql.conf.jinja
    - template: jinja
    - context:
        settings: {{ server.settings | json }}
    - user: {{ server.user }}
    - group: {{ server.user }}
    - mode: '0644'
    - require:
      - sls: db.package

db-postgresql-hba-file-managed:
  file.managed:
    - name: {{ server.conf_dir }}/pg_hba.conf
    - source: salt://{{ tpldir }}/files/pg_hba.conf.jinja
    - template: jinja
    - context:
        database: {{ db.name | json }}
        user: {{ db.user | json }}
        clients: {{ clients | json }}
        backup_clients: {{ backup_clients | json }}
        backup_user: {{ backup_user | json }}
        replication_clients: {{ replication_clients | json }}
        replication_user: {{ replication.replication_user | json }}
    - user: {{ server.user }}
    - group: {{ server.user }}
    - mode: '0640'
    - require:
      - sls: db.package

{%- else %}

db-mysql-config-file-managed:
  file.managed:
    - name: {{ server.conf_dir }}/60-hpd.cnf
    - source: salt://{{ tpldir }}/files/mysql.cnf.jinja
    - template: jinja
    - context:
        settings: {{ server.settings | json }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - sls: db.package

{%- endif %}
