{#- hpd/alert/<severity or resolved>/<host>/<check>: log it on the master,
    count it in Graphite on the monitoring host, post it to the webhook pillar
    monitoring:alerts names (_runners/hpd_alert.py). The tag and data go to the
    runner, which checks them, only as JSON arguments, under a fixed ID (a
    minion may send an event under any tag: reactor/README.md). #}
reactor-alert-record:
  runner.hpd_alert.record:
    - args:
      - tag: {{ tag | json }}
      - data: {{ data | json }}
