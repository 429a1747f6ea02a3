{#- Every host pushes its vital signs to carbon (highperf.push_vitals) from a
    Salt schedule job, as pillar `highperf:graphite` says. The job runs at
    wall-clock multiples of the interval (a cron expression, seconds last), so
    each push comes just after its whisper slot starts and fills exactly that
    slot. A `seconds:` job starts at a random phase: near a slot boundary, its
    jitter leaves one slot empty and writes the next twice. maxrunning 1 and a
    timeout below the interval keep a dead carbon from piling up pushes. #}
{%- set graphite = salt['hpd.settings']('highperf', saltenv).graphite %}
{%- set host = graphite.host or salt['pillar.get']('hpd:peers:monitoring', [none])[0] %}
{%- if graphite.timeout >= graphite.interval %}
{{-   raise('pillar highperf:graphite:timeout (' ~ graphite.timeout ~ ') must be less than highperf:graphite:interval (' ~ graphite.interval ~ ')') }}
{%- endif %}

{%- if graphite.enabled and host %}

common-vitals-schedule-present:
  schedule.present:
    - name: hpd-push-vitals
    - function: highperf.push_vitals
    - job_kwargs:
        host: {{ host | json }}
        port: {{ graphite.port }}
        prefix: {{ graphite.prefix | json }}
    - cron: {{ salt['highperf.schedule_cron'](graphite.interval) | json }}
    - maxrunning: 1
    - return_job: False
    - persist: True
{%- else %}

common-vitals-schedule-absent:
  schedule.absent:
    - name: hpd-push-vitals
{%- endif %}
