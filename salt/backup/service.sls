{%- from tpldir ~ "/map.jinja" import server with context %}

include:
  - .config

{#- The scratch server of the restore test and the anonymized snapshot
    (Debian's cluster, on the local socket only). #}
backup-postgresql-service-running:
  service.running:
    - name: {{ server.service }}
    - enable: True
    - require:
      - pkg: backup-server-package-installed

backup-dump-timer-running:
  service.running:
    - name: {{ server.unit }}.timer
    - enable: True
    - require:
      - sls: backup.config
    - watch:
      - file: backup-dump-timer-file-managed
      - file: backup-dump-unit-file-managed
