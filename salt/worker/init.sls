# worker: the site's Celery workers on the worker hosts, one systemd unit per
# worker (<site>-worker@N, pillar worker:count or one per core), each running
# one job at a time as the app user; a stop lets the running job finish
# (worker.restart after a deploy).
include:
  - site
  - .config
  - .service
