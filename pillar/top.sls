{#- Pillar is targeted by minion id (authenticated by the minion's key) through the
    master's inventory, never by grain: a minion can set its own grains, and a
    staging host claiming `env: production` must not be handed production data.
    inventory.yaml (minion id -> roles, env) sits in a pillar root: the lab writes
    its own; in production the operator keeps it (see inventory.yaml.example).
    Secrets (passwords, keys) live in secrets/<env>.sls in a private pillar root
    beside the inventory, readable by the master only; none is in this repo. #}
{%- import_yaml 'inventory.yaml' as inventory %}
{%- set minion = (inventory or {}).get(grains['id']) %}
base:
{%- if minion %}
  '{{ grains['id'] }}':
    - match: glob
    - ignore_missing: True
    - inventory
{%- for role in ['common'] + minion.roles %}
    - {{ role }}
{%- endfor %}
    - environments.{{ minion.env }}
    - secrets.{{ minion.env }}
{%- endif %}
