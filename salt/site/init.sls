# site: the Django site on the app and worker hosts: its settings file, and the
# first release when the host has none (`current` missing). Later releases are
# orch.deploy's, through the release steps site.checkout, site.venv,
# site.migrate, site.static, site.switch (then app.reload, worker.restart).
{%- from tpldir ~ "/map.jinja" import paths with context %}
include:
  - .package
  - .config
{%- if not salt['file.is_link'](paths.current) %}
  - .release
{%- endif %}
