{%- from tpldir ~ "/map.jinja" import twemproxy with context %}

include:
  - .config

{#- A restart drops the site's cache connections: only a changed file makes one. #}
twemproxy-nutcracker-service-running:
{%- if twemproxy.pools %}
  service.running:
    - name: {{ twemproxy.service }}
    - enable: True
    - require:
      - sls: twemproxy.config
    - watch:
      - file: twemproxy-nutcracker-defaults-file-managed
      - file: twemproxy-nutcracker-config-file-managed
{%- else %}
  service.dead:
    - name: {{ twemproxy.service }}
    - enable: False
{%- endif %}
