{%- from tpldir ~ "/map.jinja" import carbon, web with context %}

include:
  - .package

{#- The templates import map.jinja themselves, so the settings stay out of the
    state data (state.show_sls, the minion's state cache); graphite-web's secret
    key is read only by local_settings.py.jinja, on the minion. #}
monitoring-carbon-config-file-managed:
  file.managed:
    - name: {{ carbon.conf_dir }}/carbon.conf
    - source: salt://{{ tpldir }}/files/carbon.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - sls: monitoring.package

monitoring-carbon-schemas-file-managed:
  file.managed:
    - name: {{ carbon.conf_dir }}/storage-schemas.conf
    - source: salt://{{ tpldir }}/files/storage-schemas.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    {#- whisper's own check of every section's retentions (the file to check
        comes last on the command line). #}
    - check_cmd: >-
        /usr/bin/python3 -c 'import configparser, sys, whisper;
        c = configparser.ConfigParser(); c.read(sys.argv[1]);
        [whisper.validateArchiveList([whisper.parseRetentionDef(r)
        for r in c[s]["retentions"].split(",")]) for s in c.sections()]'
    - require:
      - sls: monitoring.package

{#- Carbon applies the retentions only to the files it creates: those it has
    already (written before the push interval changed) are resized to them. #}
monitoring-carbon-vitals-resized:
  whisper.resized:
    - name: {{ carbon.vitals_dir }}
    - retentions: {{ carbon.vitals_retentions | json }}
    - require:
      - file: monitoring-carbon-schemas-file-managed

monitoring-carbon-aggregation-file-managed:
  file.managed:
    - name: {{ carbon.conf_dir }}/storage-aggregation.conf
    - source: salt://{{ tpldir }}/files/storage-aggregation.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - sls: monitoring.package

monitoring-carbon-unit-override-managed:
  file.managed:
    - name: /etc/systemd/system/{{ carbon.service }}.service.d/hpd.conf
    - source: salt://{{ tpldir }}/files/carbon-cache.override.conf
    - makedirs: True
    - user: root
    - group: root
    - mode: '0644'

monitoring-web-settings-file-managed:
  file.managed:
    - name: {{ web.conf_dir }}/local_settings.py
    - source: salt://{{ tpldir }}/files/local_settings.py.jinja
    - template: jinja
    - user: root
    - group: {{ web.group }}
    - mode: '0640'
    - show_changes: False
    - require:
      - sls: monitoring.package

monitoring-web-uwsgi-file-managed:
  file.managed:
    - name: {{ web.conf_dir }}/uwsgi.ini
    - source: salt://{{ tpldir }}/files/uwsgi.ini.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - sls: monitoring.package

monitoring-web-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ web.service }}.service
    - source: salt://{{ tpldir }}/files/graphite-web.service.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'

{#- graphite-web's sqlite database (users, saved graphs): Django's migrations,
    run only when some are not applied yet. #}
monitoring-web-database-migrated:
  cmd.run:
    - name: graphite-manage migrate --noinput
    - unless: graphite-manage migrate --check
    - runas: {{ web.user }}
    - require:
      - file: monitoring-web-settings-file-managed

monitoring-web-database-file-managed:
  file.managed:
    - name: {{ web.database }}
    - create: False
    - replace: False
    - user: {{ web.user }}
    - group: {{ web.group }}
    - mode: '0640'
    - require:
      - cmd: monitoring-web-database-migrated
