{#- salt/beacon/<id>/<beacon>/...: a host's threshold beacon (load, memusage,
    swapusage, diskusage, hpd_port, hpd_errors) fired: the master opens an incident or
    notes that it goes on (_runners/hpd_alert.py). #}
reactor-alert-observe-{{ tag }}-{{ data.get('_stamp', '') }}:
  runner.hpd_alert.observe:
    - args:
      - tag: {{ tag | json }}
      - data: {{ data | json }}
