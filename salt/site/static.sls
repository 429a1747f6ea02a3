{#- Release step 4, on an app host (nothing on others: orch.deploy applies it
    with site.checkout and site.venv on every host, after them): the release's
    static files (hashed names, .gz and .br beside them: the site's manifest
    storage) in releases/<id>/<site:static_dir>, where uWSGI serves them from
    and orch.deploy pushes them to the CDN origin.
    Done once per release: the manifest, written last, says it is complete.
    Then the site's error page, releases/<id>/500.html (its generate_500_html,
    with the release's static URLs): what Varnish serves when no app host
    answers, published to the mine once the release serves (site.switch). #}
{%- from tpldir ~ "/map.jinja" import site, env, user, roles with context %}
{%- from tpldir ~ "/release.jinja" import release_dir, python with context %}
{%- if 'app' in roles %}

site-release-static-collected:
  cmd.run:
    - name: {{ python }} manage.py collectstatic --noinput
    - creates: {{ release_dir }}/{{ site.static_dir }}/staticfiles.json
    - cwd: {{ release_dir }}
    - runas: {{ user.name }}
    - env: {{ env | json }}

site-release-error-page-rendered:
  cmd.run:
    - name: {{ python }} manage.py generate_500_html {{ release_dir }}/500.html
    - creates: {{ release_dir }}/500.html
    - cwd: {{ release_dir }}
    - runas: {{ user.name }}
    - env: {{ env | json }}
    - require:
      - cmd: site-release-static-collected
{%- endif %}
