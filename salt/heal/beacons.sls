{#- The second line and the alerts: the tree's units beacon over the units of
    this host's roles, and the threshold beacons of pillar `alerts`
    (hpd_heal.beacons computes them); a beacon the host runs without is
    removed. Each asks the minion's main process, which may be slow to answer on
    a busy host: tried again. The last one saves them all to the minion's
    beacons.conf, so they outlive a restart. #}
{%- set beacons = salt['hpd_heal.beacons']() | dictsort %}
{%- for name, config in beacons %}

heal-beacons-{{ name }}-{{ 'present' if config else 'absent' }}:
  beacon.{{ 'present' if config else 'absent' }}:
    - name: {{ name }}
    - save: {{ loop.last }}
    - retry:
        attempts: 3
        interval: 5
{%-   for item in config or [] %}
{%-     for key, value in item.items() %}
    - {{ key | json }}: {{ value | json }}
{%-     endfor %}
{%-   endfor %}
{%- endfor %}
