{%- from tpldir ~ "/map.jinja" import carbon, web with context %}

include:
  - .config

monitoring-carbon-service-running:
  service.running:
    - name: {{ carbon.service }}
    - enable: True
    - unmask: True
    {#- A restart loses the points carbon holds in memory then: only carbon.conf
        and the unit need one. Carbon rereads storage-schemas.conf and
        storage-aggregation.conf by itself every minute. #}
    - require:
      - sls: monitoring.config
    - watch:
      - file: monitoring-carbon-config-file-managed
      - file: monitoring-carbon-unit-override-managed

monitoring-web-service-running:
  service.running:
    - name: {{ web.service }}
    - enable: True
    - require:
      - sls: monitoring.config
    - watch:
      - file: monitoring-web-settings-file-managed
      - file: monitoring-web-uwsgi-file-managed
      - file: monitoring-web-unit-file-managed
