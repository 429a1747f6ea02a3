{#- The second line and the alerts: Salt's service beacon over the units of
    this host's roles, and the threshold beacons of pillar `alerts`
    (hpd_heal.beacons computes them). Saved to the minion's beacons.conf, so
    they outlive a restart; a beacon the host runs without is removed. #}
{%- for name, config in salt['hpd_heal.beacons']() | dictsort %}

heal-beacons-{{ name }}-{{ 'present' if config else 'absent' }}:
{%-   if config %}
  beacon.present:
    - name: {{ name }}
    - save: True
{%-     for item in config %}
{%-       for key, value in item.items() %}
    - {{ key | json }}: {{ value | json }}
{%-       endfor %}
{%-     endfor %}
{%-   else %}
  beacon.absent:
    - name: {{ name }}
    - save: True
{%-   endif %}
{%- endfor %}
