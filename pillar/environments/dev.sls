# The dev environment: a developer's farm, the lab.
{#- Vitals go to the carbon of this environment's monitoring host, found in the
    master's inventory (its minion id is a name every host resolves). No
    monitoring host in the environment: no pushes. #}
{%- import_yaml 'inventory.yaml' as inventory %}
{%- set monitors = [] %}
{%- for id, minion in (inventory or {}) | dictsort %}
{%-   if 'monitoring' in minion.roles and minion.env == 'dev' %}
{%-     do monitors.append(id) %}
{%-   endif %}
{%- endfor %}
highperf:
  graphite:
    enabled: {{ (monitors | length > 0) | json }}
    host: {{ (monitors | first if monitors else 'localhost') | json }}
    port: 2003
    prefix: servers
    # Short, so a test sees a few points within a minute.
    interval: 5
    timeout: 2

monitoring:
  web:
    # A dev-only key, public in this repository; refused outside dev.
    secret_key: dev-only-graphite-web-key-not-a-secret-0123456789
