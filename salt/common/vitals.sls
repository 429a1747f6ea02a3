{#- Every host pushes its vital signs to carbon (highperf.push_vitals) from a
    Salt schedule job, as pillar `highperf:graphite` says. The job fires at
    wall-clock multiples of the interval (a cron expression, seconds last), each
    run delayed by a random 0 to interval - timeout seconds (splay): every push
    starts inside its whisper slot and fills exactly that slot, and the hosts
    do not all push in the same second (highperf.push_schedule, which refuses a
    timeout not below the interval). maxrunning 1 and the timeout keep a dead
    carbon from piling up pushes. #}
{%- set graphite = salt['hpd.settings']('highperf', saltenv).graphite %}
{%- set host = graphite.host or salt['pillar.get']('hpd:peers:monitoring', [none])[0] %}
{%- set timing = salt['highperf.push_schedule'](graphite.interval, graphite.timeout) %}

{%- if graphite.enabled and host %}

common-vitals-schedule-present:
  schedule.present:
    - name: hpd-push-vitals
    - function: highperf.push_vitals
    - job_kwargs:
        host: {{ host | json }}
        port: {{ graphite.port }}
        prefix: {{ graphite.prefix | json }}
    - cron: {{ timing.cron | json }}
    - splay: {{ timing.splay | json }}
    - maxrunning: 1
    - return_job: False
    - persist: True
{%- else %}

common-vitals-schedule-absent:
  schedule.absent:
    - name: hpd-push-vitals
{%- endif %}
