{#- Every host pushes its vital signs to carbon (highperf.push_vitals) from a
    Salt schedule job, as pillar `highperf:graphite` says. The job runs at
    wall-clock multiples of the interval (a cron expression, seconds last), so
    each push comes just after its whisper slot starts and fills exactly that
    slot. A `seconds:` job starts at a random phase: near a slot boundary, its
    jitter leaves one slot empty and writes the next twice. maxrunning 1 and a
    timeout below the interval keep a dead carbon from piling up pushes. #}
{%- set graphite = salt['hpd.settings']('highperf', saltenv).graphite %}
{%- set interval = graphite.interval %}
{%- if graphite.timeout >= interval %}
{{-   raise('pillar highperf:graphite:timeout (' ~ graphite.timeout ~ ') must be less than highperf:graphite:interval (' ~ interval ~ ')') }}
{%- endif %}
{%- if interval < 60 %}
{%-   set cron = '* * * * * */' ~ interval %}
{%- elif interval < 3600 %}
{%-   set cron = '*/' ~ (interval // 60) ~ ' * * * * 0' %}
{%- else %}
{%-   set cron = '0 * * * * 0' %}
{%- endif %}

{%- if graphite.enabled %}

common-vitals-schedule-present:
  schedule.present:
    - name: hpd-push-vitals
    - function: highperf.push_vitals
    - job_kwargs:
        host: {{ graphite.host | json }}
        port: {{ graphite.port }}
        prefix: {{ graphite.prefix | json }}
    - cron: {{ cron | json }}
    - maxrunning: 1
    - return_job: False
    - persist: True
{%- else %}

common-vitals-schedule-absent:
  schedule.absent:
    - name: hpd-push-vitals
{%- endif %}
