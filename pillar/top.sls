{#- Pillar is targeted by minion id (authenticated by the minion's key) through the
    master's inventory, never by grain: a minion can set its own grains, and a
    staging host claiming `env: production` must not be handed production data.
    inventory.yaml (minion id -> roles, env) sits in a pillar root: the lab writes
    its own; in production the operator keeps it (see inventory.yaml.example).

    Secrets (passwords, keys: the properties a role's schema marks writeOnly) are
    in secrets/<env>/<role>.sls, and a host gets only those of its own roles. A
    role with secrets is listed in `secret_roles` (tests/unit/test_pillar_top.py
    keeps the list equal to the schemas); its file must exist for every
    environment that has a host with the role: a missing one fails the pillar
    with the file named, and no state runs. dev's throw-away values are in this
    repository (secrets/dev/); staging's and production's in the operator's
    private pillar root, beside the inventory, readable by the master only. #}
{%- set secret_roles = ['monitoring'] %}
{%- import_yaml 'inventory.yaml' as inventory %}
{%- set minion = (inventory or {}).get(grains['id']) %}
{%- if minion %}
{%-   set roles = ['common'] + minion.roles %}
base:
  {#- Role data (pillar/<role>/init.sls): only where a role has some. #}
  'L@{{ grains['id'] }}':
    - match: compound
    - ignore_missing: True
{%-   for role in roles %}
    - {{ role }}
{%-   endfor %}
  {#- Listed after the role data, so the environment wins over it. #}
  '{{ grains['id'] }}':
    - match: glob
    - inventory
    - environments.{{ minion.env }}
{%-   for role in roles if role in secret_roles %}
    - secrets.{{ minion.env }}.{{ role }}
{%-   endfor %}
{%- endif %}
