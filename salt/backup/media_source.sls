{#- On every app host: an rsync daemon serving the media directory (the common
    role's <app_root>/media) to the backup hosts of the environment (pillar
    hpd:peers:backup) only, with the account of pillar media_rsync: read-only
    for the snapshots (salt/backup/media.sls), write-only for restores. #}
{%- set common = salt['hpd.settings']('common', saltenv) %}
{%- set media_rsync = salt['hpd.settings']('media_rsync', saltenv) %}
{%- if media_rsync.password is none %}
{{-   raise('pillar media_rsync:password is required on an app host (from secrets/<env>/media_rsync.sls)') }}
{%- endif %}
{%- set secrets = '/etc/rsyncd.secrets' %}

backup-media-source-package-installed:
  pkg.installed:
    - name: rsync

{#- rsyncd wants the secrets file unreadable by others (strict modes). #}
backup-media-source-secrets-file-managed:
  file.managed:
    - name: {{ secrets }}
    - source: salt://{{ tpldir }}/files/rsyncd.secrets.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False

backup-media-source-config-file-managed:
  file.managed:
    - name: /etc/rsyncd.conf
    - source: salt://{{ tpldir }}/files/rsyncd.conf.jinja
    - template: jinja
    - context:
        address: {{ salt['hpd.service_address']() | json }}
        path: {{ (common.app_root ~ '/media') | json }}
        user: {{ common.app_user.name | json }}
        group: {{ common.app_user.group | json }}
        account: {{ media_rsync.user | json }}
        secrets: {{ secrets }}
        allowed: {{ salt['hpd.addresses'](salt['pillar.get']('hpd:peers:backup', []), 'hpd:peers:backup') | json }}
    - user: root
    - group: root
    - mode: '0644'

backup-media-source-service-running:
  service.running:
    - name: rsync
    - enable: True
    - require:
      - pkg: backup-media-source-package-installed
      - file: backup-media-source-secrets-file-managed
    - watch:
      - file: backup-media-source-config-file-managed
