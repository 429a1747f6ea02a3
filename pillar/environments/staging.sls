# The staging environment: production's twin for rehearsals.
{#- Vitals go to the carbon of this environment's monitoring host, found in the
    master's inventory (its minion id is a name every host resolves). No
    monitoring host in the environment: no pushes.
    monitoring:web:secret_key comes from a secret pillar, never from this repo. #}
{%- import_yaml 'inventory.yaml' as inventory %}
{%- set monitors = [] %}
{%- for id, minion in (inventory or {}) | dictsort %}
{%-   if 'monitoring' in minion.roles and minion.env == 'staging' %}
{%-     do monitors.append(id) %}
{%-   endif %}
{%- endfor %}
highperf:
  graphite:
    enabled: {{ (monitors | length > 0) | json }}
    host: {{ (monitors | first if monitors else 'localhost') | json }}
    port: 2003
    prefix: servers
    interval: 60
    timeout: 5
