{#- salt/beacon/<id>/service/<unit>: a host's service beacon saw one of its
    units stop or run again (salt/heal/beacons.sls). The host heals it and the
    master alerts when it gives up (_runners/hpd_heal.py). Nothing here starts
    a highstate, so no state run can loop back into this reaction. #}
{%- set unit = data.get('service_name') %}
{%- if unit and data.get(unit) is mapping %}
reactor-heal-{{ data['id'] }}-{{ unit }}-{{ data.get('_stamp', '') }}:
  runner.hpd_heal.service:
    - args:
      - minion: {{ data['id'] | json }}
      - name: {{ unit | json }}
      - running: {{ data[unit].get('running') is sameas true }}
{%- endif %}
