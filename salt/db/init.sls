# db: the site's database server (PostgreSQL 15 or MariaDB 10.11, pillar
# db:engine) on the host with the db role, tuned from the host by highperf,
# reached from the app and worker hosts of the environment only.
include:
  - .package
  - .config
  - .service
  - .site
  - .backup
  - .pitr
  - .replication
