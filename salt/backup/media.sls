{#- The app hosts' media directories: pulled with rsync from each app host of
    the environment (pillar hpd:peers:app) and snapshotted with restic into
    this host's own encrypted repository by a timer (hpd_backup.media_backup).
    The app hosts cannot reach the repository, so they cannot delete or
    rewrite a snapshot. #}
{%- from tpldir ~ "/map.jinja" import backup, server with context %}
{%- set media = backup.media %}
{%- set media_rsync = salt['hpd.settings']('media_rsync', saltenv) %}
{%- if media.restic_password is none %}
{{-   raise('pillar backup:media:restic_password is required on a backup host (the media repository\'s password, from secrets/<env>/backup.sls)') }}
{%- endif %}
{%- if media_rsync.password is none %}
{{-   raise('pillar media_rsync:password is required on a backup host (from secrets/<env>/media_rsync.sls)') }}
{%- endif %}
{#- A retention that keeps nothing fails the render, naming the key. #}
{%- do salt['hpd_backup.forget_args'](media.keep) %}
{%- set unit = 'hpd-backup-media' %}
{%- set config = '/etc/hpd/media-backup.json' %}
{%- set passwords = {'restic': '/etc/hpd/media-restic.password',
                     'rsync': '/etc/hpd/media-rsync.password'} %}

include:
  - .package

backup-media-directories-managed:
  file.directory:
    - names:
      - {{ media.repo }}
      - {{ media.staging }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: True

{#- The two passwords, root's only; the commands read them from these files. #}
{%- for name, path in passwords | dictsort %}
backup-media-{{ name }}-password-file-managed:
  file.managed:
    - name: {{ path }}
    - source: salt://{{ tpldir }}/files/media-{{ name }}.password.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: True
    - show_changes: False
{%- endfor %}

backup-media-config-file-managed:
  file.serialize:
    - name: {{ config }}
    - serializer: json
    - dataset:
        hosts: {{ salt['pillar.get']('hpd:peers:app', []) | json }}
        rsync_user: {{ media_rsync.user | json }}
        rsync_password_file: {{ passwords.rsync }}
        restic_password_file: {{ passwords.restic }}
        repo: {{ media.repo }}
        staging: {{ media.staging }}
        keep: {{ media.keep | json }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True

backup-media-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ unit }}.service
    - source: salt://{{ tpldir }}/files/media.service.jinja
    - template: jinja
    - context:
        media: {{ media | json }}
        unit: {{ unit }}
        config: {{ config }}
        python: {{ grains['pythonexecutable'] | json }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - pkg: backup-server-package-installed

backup-media-timer-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ unit }}.timer
    - source: salt://{{ tpldir }}/files/timer.jinja
    - template: jinja
    - context:
        schedule: {{ media.schedule | json }}
        unit: {{ unit }}
        what: snapshot the app hosts' media directories
    - user: root
    - group: root
    - mode: '0644'

backup-media-timer-running:
  service.running:
    - name: {{ unit }}.timer
    - enable: True
    - require:
      - file: backup-media-directories-managed
      - file: backup-media-config-file-managed
      - file: backup-media-restic-password-file-managed
      - file: backup-media-rsync-password-file-managed
    - watch:
      - file: backup-media-timer-file-managed
      - file: backup-media-unit-file-managed
