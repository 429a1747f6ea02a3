{%- from tpldir ~ "/map.jinja" import haproxy with context %}

include:
  - .config

{#- A changed file or certificate is reloaded (the unit checks the file first);
    connections in flight finish in the old process. #}
lb-haproxy-service-running:
  service.running:
    - name: {{ haproxy.service }}
    - enable: True
    - reload: True
    - require:
      - sls: lb.config
    - watch:
      - file: lb-haproxy-config-file-managed
      - file: lb-haproxy-unit-override-managed
      - lb-tls-key-managed
      - lb-tls-certificate-managed
