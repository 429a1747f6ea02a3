# db_replica: a hot standby streaming from the environment's primary (the host
# with the db role), built from a base backup, ready to be promoted by
# orch.db_failover.
include:
  - .package
  - .config
  - .service
