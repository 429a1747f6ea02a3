{%- from tpldir ~ "/map.jinja" import server with context %}

include:
  - .config

{%- if server.engine == 'postgresql' %}

{#- A changed postgresql.conf or pg_hba.conf is reloaded, never restarted by
    this state: most settings take a reload. #}
db-postgresql-service-running:
  service.running:
    - name: {{ server.service }}
    - enable: True
    - reload: True
    - require:
      - sls: db.config
    - watch:
      - file: db-postgresql-config-file-managed
      - file: db-postgresql-hba-file-managed

{#- A restart only when a setting in the files differs from the running
    server's and PostgreSQL cannot take it on reload (context postmaster:
    shared_buffers, max_connections, ...). pg_file_settings parses the files
    when queried and marks exactly those "setting could not be applied" (the
    same check that sets pg_settings.pending_restart on a reload, without
    waiting for the reload to land). The server's own check of the whole
    configuration (postgres -C) runs first: a bad file fails the state and
    leaves the server running. #}
db-postgresql-service-restarted:
  cmd.run:
    - name: >-
        runuser -u {{ server.user }} -- {{ server.bin_dir }}/postgres
        -D {{ server.data_dir }} -c config_file={{ server.conf_dir }}/postgresql.conf
        -C data_directory > /dev/null
        && systemctl restart {{ server.service }}
    - cwd: /
    - onlyif:
      - >-
        test -n "$(runuser -u {{ server.user }} -- psql -XAtqc "SELECT name FROM
        pg_file_settings JOIN pg_settings USING (name) WHERE context = 'postmaster'
        AND error IS NOT NULL")"
    - require:
      - service: db-postgresql-service-running

{%- else %}

db-mysql-service-running:
  service.running:
    - name: {{ server.service }}
    - enable: True
    - require:
      - sls: db.config
    - watch:
      - file: db-mysql-config-file-managed

{%- endif %}
