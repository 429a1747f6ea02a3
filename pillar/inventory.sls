{#- This minion's roles and environment, from the master's inventory. #}
{%- import_yaml 'inventory.yaml' as inventory %}
{%- set minion = inventory[grains['id']] %}
hpd:
  env: {{ minion.env | json }}
  roles: {{ minion.roles | json }}
