{#- Release step 7 on worker hosts (after every app host switched): each
    worker restarted in turn, gracefully: its running job finishes, then it
    starts on the release `current` points to. #}
{%- from tpldir ~ "/map.jinja" import units with context %}

include:
  - site.switch
{%- for name in units %}

{#- A worker that crashed in a loop (the release before could not start) hit
    systemd's start limit, which refuses a restart: cleared first (Salt has
    no state for it). #}
worker-{{ name }}-start-limit-reset:
  cmd.run:
    - name: systemctl reset-failed {{ name }}
    - require:
      - sls: site.switch

{#- Only once `current` points to the release: a failed switch restarts nothing. #}
worker-{{ name }}-restarted:
  module.run:
    - service.restart:
      - name: {{ name }}
    - require:
      - cmd: worker-{{ name }}-start-limit-reset
{%- endfor %}
