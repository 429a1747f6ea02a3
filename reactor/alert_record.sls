{#- hpd/alert/<severity or resolved>/<host>/<check>: log it on the master,
    count it in Graphite on the monitoring host, post it to the webhook pillar
    monitoring:alerts names (_runners/hpd_alert.py). #}
reactor-alert-record-{{ tag }}-{{ data.get('_stamp', '') }}:
  runner.hpd_alert.record:
    - args:
      - tag: {{ tag | json }}
      - data: {{ data | json }}
