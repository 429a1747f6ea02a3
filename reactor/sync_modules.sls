{#- A minion that starts gets the tree's extension modules (_modules, and the
    _states, _grains... to come) before anything asks it to render a state.
    Highstates do not sync (minions run with autoload_dynamic_modules: False):
    after changing an extension module, run `salt '*' saltutil.sync_all`
    (orch.deploy does it first). #}
reactor-modules-sync-all:
  local.saltutil.sync_all:
    - tgt: {{ [data['id']] | json }}
    - tgt_type: list
