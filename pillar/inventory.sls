{#- This minion's roles and environment, and its environment's hosts by role,
    from the master's inventory. #}
{%- import_yaml 'inventory.yaml' as inventory %}
{%- set minion = inventory[grains['id']] %}
{%- set peers = {} %}
{%- for id, other in inventory | dictsort if other.env == minion.env %}
{%-   for role in other.roles %}
{%-     do peers.setdefault(role, []).append(id) %}
{%-   endfor %}
{%- endfor %}
hpd:
  env: {{ minion.env | json }}
  roles: {{ minion.roles | json }}
  # Hosts of this environment by role (minion ids, names every host resolves).
  peers: {{ peers | json }}
