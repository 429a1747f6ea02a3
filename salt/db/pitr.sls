{%- from tpldir ~ "/map.jinja" import server, pitr with context %}

include:
  - .service

{#- Point-in-time recovery (pillar backup:pitr): PostgreSQL archives every
    WAL segment with pgBackRest (archive_mode and archive_command are in
    conf.d/hpd.conf, map.jinja), into an encrypted repository; a full backup
    each day (backup:schedule) is the base a restore replays the WAL onto.
    The passphrase is in pgbackrest.conf only (root and postgres read it),
    written by the template from the unmasked pillar on the minion. #}
{%- if server.engine == 'postgresql' %}
{%-   set backup = salt['hpd.settings']('backup', saltenv) %}

db-pitr-config-file-managed:
  file.managed:
    - name: /etc/pgbackrest.conf
    - source: salt://{{ tpldir }}/files/pgbackrest.conf.jinja
    - template: jinja
    - user: root
    - group: {{ server.user }}
    - mode: '0640'
    - show_changes: False
    - require:
      - sls: db.package

db-pitr-repo-directory-managed:
  file.directory:
    - name: {{ pitr.repo_path }}
    - user: {{ server.user }}
    - group: {{ server.user }}
    - mode: '0750'
    - require:
      - sls: db.package

{#- After the restart that turns archive_mode on (db.service). #}
db-pitr-stanza-created:
  cmd.run:
    - name: pgbackrest --stanza={{ pitr.stanza }} stanza-create
    - runas: {{ server.user }}
    - cwd: /
    - creates: {{ pitr.repo_path }}/backup/{{ pitr.stanza }}/backup.info
    - require:
      - file: db-pitr-config-file-managed
      - file: db-pitr-repo-directory-managed
      - cmd: db-postgresql-service-restarted

db-pitr-backup-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/hpd-pgbackrest-backup.service
    - source: salt://{{ tpldir }}/files/pgbackrest-backup.service.jinja
    - template: jinja
    - context:
        stanza: {{ pitr.stanza }}
        user: {{ server.user }}
    - user: root
    - group: root
    - mode: '0644'

db-pitr-backup-timer-file-managed:
  file.managed:
    - name: /etc/systemd/system/hpd-pgbackrest-backup.timer
    - source: salt://{{ tpldir }}/files/pgbackrest-backup.timer.jinja
    - template: jinja
    - context:
        schedule: {{ backup.schedule | json }}
    - user: root
    - group: root
    - mode: '0644'

db-pitr-backup-timer-running:
  service.running:
    - name: hpd-pgbackrest-backup.timer
    - enable: True
    - require:
      - cmd: db-pitr-stanza-created
    - watch:
      - file: db-pitr-backup-unit-file-managed
      - file: db-pitr-backup-timer-file-managed

{#- A full backup whenever the repository holds none taken on the server's
    current timeline (hpd_backup.pitr_base_current): a new cluster, a promoted
    replica (orch.db_failover: the WAL the old primary wrote is in the old
    primary's repository, not this one), a point-in-time restore (a new
    timeline). A point-in-time restore of any later moment starts from it. #}
db-pitr-base-backup-done:
  cmd.run:
    - name: systemctl start hpd-pgbackrest-backup.service
    - unless:
      - fun: hpd_backup.pitr_base_current
    {#- Right after a promotion the new timeline's first WAL may not be
        archived yet when pgBackRest checks for it. #}
    - retry:
        attempts: 3
        interval: 15
    - require:
      - service: db-pitr-backup-timer-running
{%- endif %}
