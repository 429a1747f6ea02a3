{#- The first release of a host, made by the highstate when `current` is
    missing: the release steps in order, each requiring the one before; the
    migrations on the first app host only (hpd:peers:app), retried while the
    database is not up yet (the db host's highstate runs at the same time).
    An app host whose first release fails publishes False as its error page:
    the varnish hosts' highstate stops waiting for it (hpd_edge.site_error_page). #}
{%- from tpldir ~ "/map.jinja" import roles with context %}
{%- set migrates = grains['id'] == (salt['pillar.get']('hpd:peers:app', []) | sort | first) %}
include:
  - .checkout
  - .venv
{%- if migrates %}
  - .migrate
{%- endif %}
{%- if 'app' in roles %}
  - .static
{%- endif %}
  - .switch

extend:
  site-release-checked-out:
    git:
      - require:
        - sls: site.package
        - sls: site.config
  site-release-venv-linked:
    hpd_site:
      - require:
        - git: site-release-checked-out
{%- if migrates %}
  site-release-migrated:
    cmd:
      - retry:
          attempts: 20
          interval: 10
      - require:
        - hpd_site: site-release-venv-linked
{%- endif %}
{%- if 'app' in roles %}
  site-release-static-collected:
    cmd:
      - require:
        - hpd_site: site-release-venv-linked
{%- endif %}
  site-release-current-switched:
    module:
      - require:
        - hpd_site: site-release-venv-linked
{%- if migrates %}
        - cmd: site-release-migrated
{%- endif %}
{%- if 'app' in roles %}
        - cmd: site-release-static-collected
{%- endif %}
{%- if 'app' in roles %}

site-release-failed-published:
  module.run:
    - mine.send:
      - name: hpd_error_page
      - mine_function: test.false
    - onfail:
      - module: site-release-current-switched
{%- endif %}
