{#- On every app host: the password the deploy pushes static files to the CDN
    origin with (rsync --password-file), root's alone. #}
{%- from tpldir ~ "/map.jinja" import cdn, paths with context %}
{%- if cdn.push.password is none %}
{{-   raise('pillar cdn:push:password is required on an app host (from secrets/<env>/cdn.sls)') }}
{%- endif %}

cdn-push-client-package-installed:
  pkg.installed:
    - name: rsync

cdn-push-password-file-managed:
  file.managed:
    - name: {{ paths.push_password }}
    - source: salt://{{ tpldir }}/files/push.password.jinja
    - template: jinja
    - makedirs: True
    - dir_mode: '0755'
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False
