{#- salt/beacon/<id>/<beacon>/...: a host's threshold beacon (load, memusage,
    swapusage, diskusage, hpd_port, hpd_errors) fired: the master opens an incident or
    notes that it goes on (_runners/hpd_alert.py). A minion chooses its events'
    tags and data: they go to the runner, which checks them, only as JSON
    arguments, under a fixed ID (reactor/README.md). #}
reactor-alert-observe:
  runner.hpd_alert.observe:
    - args:
      - tag: {{ tag | json }}
      - data: {{ data | json }}
