{#- Release step 2: the release's virtualenv (releases/<id>/venv, a symlink),
    shared with earlier releases whose requirements.txt is the same: a release
    without new dependencies installs nothing. Packages come from the local
    wheelhouse only, each checked against the hash requirements.txt (the site's
    lock) pins for it. #}
{%- from tpldir ~ "/map.jinja" import site, paths, user with context %}
{%- from tpldir ~ "/release.jinja" import release_dir with context %}

site-release-venv-linked:
  hpd_site.venv_linked:
    - name: {{ release_dir }}/venv
    - requirements: {{ release_dir }}/requirements.txt
    - venvs: {{ paths.venvs }}
    - find_links: {{ site.wheelhouse }}
    - user: {{ user.name }}
