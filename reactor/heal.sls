{#- salt/beacon/<id>/hpd_units/<unit>: a host's units beacon saw one of its
    units stop or run again (salt/heal/beacons.sls). The host heals it and the
    master alerts when it gives up (_runners/hpd_heal.py). Nothing here starts
    a highstate, so no state run can loop back into this reaction. A minion
    chooses its events' tags and data: they go to the runner, which checks
    them, only as JSON arguments, under a fixed ID (reactor/README.md). #}
reactor-heal:
  runner.hpd_heal.beacon:
    - args:
      - tag: {{ tag | json }}
      - data: {{ data | json }}
