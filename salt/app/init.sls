# app: the site under uWSGI on the app hosts: an emperor under systemd
# (uwsgi-emperor.service, as the app user), one vassal for the site, HTTP on the
# host's private address (pillar app:port), a stats socket, chain reloads that
# serve the release `current` points to (app.reload).
include:
  - .package
  - site
  - .config
  - .service
