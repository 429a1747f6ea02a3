{#- This minion's roles and environment, and its environment's hosts by role,
    from the master's inventory. #}
{%- import_yaml 'inventory.yaml' as inventory %}
{#- Which of an environment's database hosts is the primary: db_primary.yaml,
    beside inventory.yaml, when orch.db_failover has written one; else the
    inventory's (hosts.jinja). #}
{%- set found %}{% include 'db_primary.yaml' ignore missing %}{% endset %}
{%- set db_primary = found | load_yaml or {} %}
{%- from 'hosts.jinja' import hosts with context %}
{%- set minion = hosts[grains['id']] %}
{%- set peers = {} %}
{%- set addresses = {} %}
{%- for id, other in hosts | dictsort if other.env == minion.env %}
{%-   for role in other.roles %}
{%-     do peers.setdefault(role, []).append(id) %}
{%-   endfor %}
{%-   if inventory[id].address is defined %}
{%-     do addresses.update({id: inventory[id].address}) %}
{%-   endif %}
{%- endfor %}
hpd:
  env: {{ minion.env | json }}
  roles: {{ minion.roles | json }}
  # Hosts of this environment by role (minion ids, names every host resolves).
  peers: {{ peers | json }}
  # The inventory's addresses of this environment's hosts (those it gives
  # one): where the lb hosts send requests, rather than where a name resolves.
  addresses: {{ addresses | json }}
