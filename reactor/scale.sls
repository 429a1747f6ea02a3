{#- Hosts that come and go (_runners/hpd_scale.py): salt/key (a key accepted
    or deleted) and salt/minion/<id>/start (a new minion's first start). The
    tag and data go to the runner, which checks them, only as JSON arguments,
    under a fixed ID (a minion may send an event under any tag:
    reactor/README.md). #}
reactor-scale:
  runner.hpd_scale.react:
    - args:
      - tag: {{ tag | json }}
      - data: {{ data | json }}
