{#- Release step 6 on app hosts (after site.switch): a chain reload. uWSGI
    replaces its workers one at a time, each new one importing the release
    `current` points to now; the others keep serving meanwhile. /health/
    reports the new release id once every worker is new. #}
{%- from tpldir ~ "/map.jinja" import uwsgi_paths with context %}

include:
  - site.switch

{#- Only once `current` points to the release: a failed switch reloads nothing. #}
app-uwsgi-chain-reloaded:
  file.touch:
    - name: {{ uwsgi_paths.reload }}
    - require:
      - sls: site.switch
