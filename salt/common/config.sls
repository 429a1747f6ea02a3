{%- from tpldir ~ "/map.jinja" import common with context %}
{%- set user = common.app_user %}

include:
  - .package

{#- The time zone as Debian keeps it (what timedatectl writes), with file
    states: no dependency on timedated or D-Bus. #}
common-timezone-zoneinfo-exists:
  file.exists:
    - name: /usr/share/zoneinfo/{{ common.timezone }}
    - require:
      - sls: common.package

common-timezone-localtime-symlink:
  file.symlink:
    - name: /etc/localtime
    - target: /usr/share/zoneinfo/{{ common.timezone }}
    - force: True
    - require:
      - file: common-timezone-zoneinfo-exists

common-timezone-name-managed:
  file.managed:
    - name: /etc/timezone
    - contents: {{ common.timezone }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: common-timezone-zoneinfo-exists

common-app-group-present:
  group.present:
    - name: {{ user.group }}
    - gid: {{ user.gid }}

common-app-user-present:
  user.present:
    - name: {{ user.name }}
    - uid: {{ user.uid }}
    - gid: {{ user.gid }}
    - home: {{ common.app_root }}
    - createhome: False
    - shell: {{ user.shell }}
    - password: '!'
    - require:
      - group: common-app-group-present

common-app-root-directory:
  file.directory:
    - name: {{ common.app_root }}
    - user: {{ user.name }}
    - group: {{ user.group }}
    - mode: '0755'
    - require:
      - user: common-app-user-present

common-app-layout-directories:
  file.directory:
    - names:
{%- for sub in ['releases', 'shared', 'static', 'media', 'log', 'run'] %}
      - {{ common.app_root }}/{{ sub }}
{%- endfor %}
    - user: {{ user.name }}
    - group: {{ user.group }}
    - mode: '0750'
    - require:
      - file: common-app-root-directory
