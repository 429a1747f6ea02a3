{%- from tpldir ~ "/map.jinja" import emperor, vassal_file, uwsgi_paths with context %}

include:
  - .package
  - site.config

app-emperor-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ emperor.service }}.service
    - source: salt://{{ tpldir }}/files/uwsgi-emperor.service.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: app-emperor-stop-script-managed

{#- The unit's ExecStop: the emperor's stop, woken from its 1-s waits. #}
app-emperor-stop-script-managed:
  file.managed:
    - name: {{ emperor.stop }}
    - source: salt://{{ tpldir }}/files/uwsgi-emperor-stop
    - makedirs: True
    - user: root
    - group: root
    - mode: '0755'

{#- The emperor reloads a vassal whose file changes (a full graceful reload, for
    new options), starts new ones and stops those removed. #}
app-emperor-vassals-directory:
  file.directory:
    - name: {{ emperor.vassals }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True
    - clean: True
    - require:
      - file: app-uwsgi-vassal-file-managed

app-uwsgi-vassal-file-managed:
  file.managed:
    - name: {{ vassal_file }}
    - source: salt://{{ tpldir }}/files/vassal.ini.jinja
    - template: jinja
    - makedirs: True
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - pkg: app-uwsgi-package-installed

{#- New settings reach the site through a chain reload (one worker at a time). #}
app-uwsgi-settings-chain-reloaded:
  file.touch:
    - name: {{ uwsgi_paths.reload }}
    - onchanges:
      - file: site-config-settings-file-managed
