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
    private pillar root, beside the inventory, readable by the master only.

    A role whose secrets other roles' hosts need too (the db password, which
    the app and worker hosts connect with) names them in `secret_readers`, as
    its schema's x-secret-readers does (the unit test keeps the two equal).
    A db_replica host reads db's and backup's: it runs the db role's
    configuration, so that it can be promoted (orch.db_failover).

    A secret that a role's readers must not get (its schema says
    x-secret-readers: [] on the property: the backup role's restic password,
    which the db hosts have no use for) is in secrets/<env>/<role>-own.sls,
    which only the role's own hosts get; the role is listed in
    `own_secret_roles` (kept equal to the schemas by the same unit test). #}
{%- set secret_roles = ['monitoring', 'db', 'backup', 'media_rsync', 'site', 'lb', 'cdn',
                        'db_replica'] %}
{%- set own_secret_roles = ['backup'] %}
{%- set secret_readers = {'db': ['app', 'worker', 'db_replica'], 'backup': ['db', 'db_replica'],
                          'media_rsync': ['app', 'backup'], 'site': ['app', 'worker'],
                          'cdn': ['app'], 'db_replica': ['db']} %}
{%- import_yaml 'inventory.yaml' as inventory %}
{%- set minion = (inventory or {}).get(grains['id']) %}
{%- if minion %}
{%-   set roles = ['common'] + minion.roles %}
{#-   The roles whose pillar (data and secrets) this host reads: its own, and
      those whose secrets one of its roles reads. #}
{%-   set reads = roles[:] %}
{%-   for role, readers in secret_readers | dictsort
        if role not in reads and readers | select('in', roles) | list %}
{%-     do reads.append(role) %}
{%-   endfor %}
base:
  {#- Role data (pillar/<role>/init.sls): only where a role has some. #}
  'L@{{ grains['id'] }}':
    - match: compound
    - ignore_missing: True
{%-   for role in reads %}
    - {{ role }}
{%-   endfor %}
  {#- Listed after the role data, so the environment wins over it. #}
  '{{ grains['id'] }}':
    - match: glob
    - inventory
    - environments.{{ minion.env }}
{%-   for role in reads if role in secret_roles %}
    - secrets.{{ minion.env }}.{{ role }}
{%-   endfor %}
{%-   for role in roles if role in own_secret_roles %}
    - secrets.{{ minion.env }}.{{ role }}-own
{%-   endfor %}
{%- endif %}
