# backup: the backup host pulls the site's database from the db host of its
# environment (pg_dump -Fc over the network as a read-only user, by a systemd
# timer) and keeps the dumps backup:keep_days days where the db host cannot
# reach them; its own PostgreSQL is the scratch server of the restore test and
# of the developers' anonymized snapshot (_modules/hpd_backup.py). It also
# snapshots the app hosts' media directories with restic (media.sls; the app
# hosts serve them with media_source.sls).
include:
  - .package
  - .config
  - .service
  - .media
