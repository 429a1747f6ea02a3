{%- from tpldir ~ "/map.jinja" import rsyncd_service with context %}

include:
  - .config

{#- A changed nginx.conf (already checked by nginx -t) is reloaded: the
    workers finish what they serve. #}
cdn-nginx-service-running:
  service.running:
    - name: nginx
    - enable: True
    - unmask: True
    - reload: True
    - require:
      - sls: cdn.config
    - watch:
      - file: cdn-nginx-config-file-managed

{#- rsync reads its config and secrets for each connection: only the unit
    needs a restart. #}
cdn-rsyncd-service-running:
  service.running:
    - name: {{ rsyncd_service }}
    - enable: True
    - require:
      - sls: cdn.config
    - watch:
      - file: cdn-rsyncd-unit-file-managed
