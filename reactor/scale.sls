{#- Hosts that come and go (_runners/hpd_scale.py): salt/key (a key accepted
    or deleted) and salt/minion/<id>/start (a new minion's first start). #}
{%- if tag == 'salt/key' and data.get('act') in ('accepted', 'delete') %}
reactor-scale-{{ data['act'] }}-{{ data['id'] }}:
  runner.hpd_scale.{{ 'accepted' if data['act'] == 'accepted' else 'left' }}:
    - args:
      - minion: {{ data['id'] | json }}
{%- elif tag.startswith('salt/minion/') %}
reactor-scale-start-{{ data['id'] }}:
  runner.hpd_scale.joined:
    - args:
      - minion: {{ data['id'] | json }}
{%- endif %}
