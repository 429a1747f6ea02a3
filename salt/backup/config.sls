{%- from tpldir ~ "/map.jinja" import backup, server with context %}

include:
  - .package

backup-dumps-directory-managed:
  file.directory:
    - name: {{ backup.dir }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: True

{#- libpq's password file for the read-only user: the only place the
    password is written, root's only. #}
backup-pgpass-file-managed:
  file.managed:
    - name: {{ server.passfile }}
    - source: salt://{{ tpldir }}/files/pgpass.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: True
    - show_changes: False

backup-dump-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ server.unit }}.service
    - source: salt://{{ tpldir }}/files/dump.service.jinja
    - template: jinja
    - context:
        backup: {{ backup | json }}
        server: {{ server | json }}
        python: {{ grains['pythonexecutable'] | json }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - pkg: backup-server-package-installed

backup-dump-timer-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ server.unit }}.timer
    - source: salt://{{ tpldir }}/files/timer.jinja
    - template: jinja
    - context:
        schedule: {{ backup.schedule | json }}
        unit: {{ server.unit | json }}
        what: dump the site's database
    - user: root
    - group: root
    - mode: '0644'
