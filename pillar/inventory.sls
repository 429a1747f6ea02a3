{#- This minion's roles and environment, and its environment's hosts by role,
    from the master's inventory. #}
{%- import_yaml 'inventory.yaml' as inventory %}
{#- Which of an environment's database hosts is the primary: db_primary.yaml,
    beside inventory.yaml (environment -> minion id), when orch.db_failover
    has written one; else the inventory's. The named host has the db role, the
    environment's other db and db_replica hosts db_replica, so hpd:peers:db
    (where the app and worker hosts find the primary) names it. #}
{%- set found %}{% include 'db_primary.yaml' ignore missing %}{% endset %}
{%- set primaries = found | load_yaml or {} %}
{%- set hosts = {} %}
{%- for id, entry in inventory | dictsort %}
{%-   set roles = entry.roles %}
{%-   set primary = primaries.get(entry.env) %}
{%-   if primary and ('db' in roles or 'db_replica' in roles) %}
{%-     set pair = 'db' if id == primary else 'db_replica' %}
{%-     set roles = roles | reject('in', ['db', 'db_replica']) | list + [pair] %}
{%-   endif %}
{%-   do hosts.update({id: {'env': entry.env, 'roles': roles}}) %}
{%- endfor %}
{%- set minion = hosts[grains['id']] %}
{%- set peers = {} %}
{%- for id, other in hosts | dictsort if other.env == minion.env %}
{%-   for role in other.roles %}
{%-     do peers.setdefault(role, []).append(id) %}
{%-   endfor %}
{%- endfor %}
hpd:
  env: {{ minion.env | json }}
  roles: {{ minion.roles | json }}
  # Hosts of this environment by role (minion ids, names every host resolves).
  peers: {{ peers | json }}
