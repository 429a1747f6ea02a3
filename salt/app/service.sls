{%- from tpldir ~ "/map.jinja" import emperor with context %}

include:
  - .config

app-emperor-service-running:
  service.running:
    - name: {{ emperor.service }}
    - enable: True
    - require:
      - sls: app.config
      - sls: site
    - watch:
      - file: app-emperor-unit-file-managed
