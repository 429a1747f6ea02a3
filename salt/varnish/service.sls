{%- from tpldir ~ "/map.jinja" import server with context %}

include:
  - .config

{#- A restart empties the cache: only new daemon options (the drop-in: ports,
    storage size) make one. #}
varnish-service-running:
  service.running:
    - name: {{ server.service }}
    - enable: True
    - require:
      - sls: varnish.config
    - watch:
      - file: varnish-unit-override-managed

{#- A new VCL or error page is loaded into the running Varnish (Debian's
    varnishreload: vcl.load, then vcl.use): the cache stays. #}
varnish-vcl-reloaded:
  service.running:
    - name: {{ server.service }}
    - reload: True
    - require:
      - service: varnish-service-running
    - watch:
      - file: varnish-vcl-file-managed
      - file: varnish-error-page-file-managed
