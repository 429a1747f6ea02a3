{%- from tpldir ~ "/map.jinja" import units, extra_units with context %}

include:
  - .config
  - site

{#- A restart (new settings, unit or code) is a graceful stop: each unit's
    running job finishes first. #}
{%- for name in units %}

worker-{{ name }}-service-running:
  service.running:
    - name: {{ name }}
    - enable: True
    - require:
      - sls: site
    - watch:
      - file: worker-unit-file-managed
      - file: site-config-settings-file-managed
      - file: site-config-env-file-managed
{%- endfor %}

{#- Units beyond worker:count (it was lowered) stop, gracefully too. #}
{%- for name in extra_units %}

worker-{{ name }}-service-dead:
  service.dead:
    - name: {{ name }}
    - enable: False
{%- endfor %}
