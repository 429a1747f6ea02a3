# The db role's packages (PostgreSQL 15, its client, pgBackRest).
include:
  - db.package
