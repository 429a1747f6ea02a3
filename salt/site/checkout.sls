{#- Release step 1: the site's code at deploy:sha (or, for the highstate's first
    release, site:rev) in releases/<release id>, as the app user (git.detached:
    a clone, the commit checked out detached). #}
{%- from tpldir ~ "/map.jinja" import site, user with context %}
{%- from tpldir ~ "/release.jinja" import release, release_dir with context %}
{%- if release.rev is none %}
{{-   raise('pillar deploy:sha is required to check out release ' ~ release.id) }}
{%- endif %}

site-release-checked-out:
  git.detached:
    - name: {{ site.repository }}
    - rev: {{ release.rev }}
    - target: {{ release_dir }}
    - user: {{ user.name }}
