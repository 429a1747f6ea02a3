# The backup role's secrets in the dev environment: throw-away values, public
# in this repository (hpd.settings refuses dev-only... values outside dev). The
# backup hosts and the db hosts (which create the read-only role) get this
# file, no other host (pillar/top.sls).
backup:
  db_password: dev-only-backup-password-not-a-secret-7
  pitr:
    cipher_pass: dev-only-pgbackrest-passphrase-not-a-secret-3
  media:
    restic_password: dev-only-restic-password-not-a-secret-5
