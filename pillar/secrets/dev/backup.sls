# The backup role's secrets in the dev environment: throw-away values, public
# in this repository (hpd.settings refuses dev-only... values outside dev). The
# backup hosts and the db and db_replica hosts (which create the read-only
# role and encrypt pgBackRest's repository) get this file, no other host
# (pillar/top.sls); the restic password is in backup-own.sls.
backup:
  db_password: dev-only-backup-password-not-a-secret-7
  pitr:
    cipher_pass: dev-only-pgbackrest-passphrase-not-a-secret-3
