{#- Release step 7 on worker hosts (after every app host switched): each
    worker restarted in turn, gracefully: its running job finishes, then it
    starts on the release `current` points to. #}
{%- from tpldir ~ "/map.jinja" import units with context %}

include:
  - site.switch
{%- for name in units %}

{#- Only once `current` points to the release: a failed switch restarts nothing. #}
worker-{{ name }}-restarted:
  module.run:
    - service.restart:
      - name: {{ name }}
    - require:
      - sls: site.switch
{%- endfor %}
