{#- Release step 3: the release's migrations, on one host (the first app host,
    hpd:peers:app, in the highstate; orch.deploy picks its own), before any
    host switches. Nothing runs when none is missing. #}
{%- from tpldir ~ "/map.jinja" import env, user with context %}
{%- from tpldir ~ "/release.jinja" import release_dir, python with context %}

site-release-migrated:
  cmd.run:
    - name: {{ python }} manage.py migrate --noinput
    - unless: {{ python }} manage.py migrate --check
    - cwd: {{ release_dir }}
    - runas: {{ user.name }}
    - env: {{ env | json }}
