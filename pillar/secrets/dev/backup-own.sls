# The backup role's secrets that only the backup hosts get (x-secret-readers:
# [] in pillar/backup/schema.yaml; pillar/top.sls), in the dev environment:
# throw-away values, public in this repository.
backup:
  media:
    restic_password: dev-only-restic-password-not-a-secret-5
