# The db_replica role's secrets in the dev environment: throw-away values,
# public in this repository (hpd.settings refuses dev-only... values outside
# dev). The db_replica hosts and the db hosts (which create the replication
# role) get this file, no other host (pillar/top.sls).
db_replica:
  replication_password: dev-only-replication-password-not-a-secret-5
