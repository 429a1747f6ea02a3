{#- Release step 4: the release's static files (hashed names, .gz and .br
    beside them: the site's manifest storage) in releases/<id>/<site:static_dir>,
    where uWSGI serves them from and orch.deploy pushes them to the CDN origin.
    Done once per release: the manifest, written last, says it is complete. #}
{%- from tpldir ~ "/map.jinja" import site, env, user with context %}
{%- from tpldir ~ "/release.jinja" import release_dir, python with context %}

site-release-static-collected:
  cmd.run:
    - name: {{ python }} manage.py collectstatic --noinput
    - creates: {{ release_dir }}/{{ site.static_dir }}/staticfiles.json
    - cwd: {{ release_dir }}
    - runas: {{ user.name }}
    - env: {{ env | json }}
