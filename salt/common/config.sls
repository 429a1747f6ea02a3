{%- from tpldir ~ "/map.jinja" import common with context %}
{%- set user = common.app_user %}

include:
  - .package

common-timezone-managed:
  timezone.system:
    - name: {{ common.timezone }}
    - utc: True
    - require:
      - sls: common.package

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
