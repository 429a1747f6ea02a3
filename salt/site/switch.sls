{#- Release step 5: `current` points to the release, switched in one rename (a
    request never finds it missing); only a complete release: its virtualenv
    built and, on app hosts, its static files collected. uWSGI and the workers
    serve it after app.reload and worker.restart. A rollback is this step with
    deploy:release naming the earlier release. An app host's mine data then
    says which error page it serves (hpd_error_page: the varnish hosts read it). #}
{%- from tpldir ~ "/map.jinja" import site, paths, roles with context %}
{%- from tpldir ~ "/release.jinja" import release_dir with context %}

site-release-complete:
  file.exists:
    - names:
      - {{ release_dir }}/venv/.hpd-complete
{%- if 'app' in roles %}
      - {{ release_dir }}/{{ site.static_dir }}/staticfiles.json
{%- endif %}

{#- Salt's file.symlink module, not the state: the state removes a link that
    points elsewhere before it makes the new one, a moment with no `current`. #}
site-release-current-switched:
  module.run:
    - file.symlink:
      - src: {{ release_dir }}
      - path: {{ paths.current }}
      - atomic: True
    - require:
      - file: site-release-complete

{%- if 'app' in roles %}

site-release-error-page-published:
  module.run:
    - mine.update: []
    - onchanges:
      - module: site-release-current-switched
{%- endif %}
