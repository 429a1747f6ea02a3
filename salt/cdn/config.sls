{%- from tpldir ~ "/map.jinja" import cdn, paths, owner, rsyncd_service with context %}
{%- if cdn.push.password is none %}
{{-   raise('pillar cdn:push:password is required on a cdn host (from secrets/<env>/cdn.sls)') }}
{%- endif %}
{%- set address = salt['hpd.service_address'](cdn.listen_address, 'cdn:listen_address') %}

include:
  - .package

cdn-owner-user-present:
  user.present:
    - name: {{ owner }}
    - system: True
    - home: {{ cdn.root }}
    - createhome: False
    - shell: /usr/sbin/nologin

{#- The pushes make a directory per site in it (as the owner). #}
cdn-root-directory-managed:
  file.directory:
    - name: {{ cdn.root }}
    - user: {{ owner }}
    - group: {{ owner }}
    - mode: '0755'
    - makedirs: True
    - require:
      - user: cdn-owner-user-present

{#- nginx's own check of the whole new file (it comes last on the command line):
    a file nginx refuses is never written. #}
cdn-nginx-config-file-managed:
  file.managed:
    - name: {{ paths.nginx_conf }}
    - source: salt://{{ tpldir }}/files/nginx.conf.jinja
    - template: jinja
    - context:
        address: {{ address | json }}
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: /usr/sbin/nginx -t -q -c
    - require:
      - pkg: cdn-nginx-package-installed

{#- rsyncd wants its secrets file unreadable by others (strict modes). #}
cdn-rsyncd-secrets-file-managed:
  file.managed:
    - name: {{ paths.rsyncd_secrets }}
    - source: salt://{{ tpldir }}/files/rsyncd.secrets.jinja
    - template: jinja
    - makedirs: True
    - dir_mode: '0755'
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False

cdn-rsyncd-config-file-managed:
  file.managed:
    - name: {{ paths.rsyncd_conf }}
    - source: salt://{{ tpldir }}/files/rsyncd.conf.jinja
    - template: jinja
    - context:
        address: {{ address | json }}
        owner: {{ owner }}
        secrets: {{ paths.rsyncd_secrets }}
        allowed: {{ salt['hpd.addresses'](salt['pillar.get']('hpd:peers:app', []), 'hpd:peers:app') | json }}
    - makedirs: True
    - dir_mode: '0755'
    - user: root
    - group: root
    - mode: '0644'

cdn-rsyncd-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ rsyncd_service }}.service
    - source: salt://{{ tpldir }}/files/rsyncd.service.jinja
    - template: jinja
    - context:
        config: {{ paths.rsyncd_conf }}
    - user: root
    - group: root
    - mode: '0644'
