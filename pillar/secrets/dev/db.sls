# The db role's secrets in the dev environment: throw-away values, public in
# this repository (hpd.settings refuses dev-only... values outside dev). The
# db hosts and the app and worker hosts (which connect as db:user) get this
# file, no other host (pillar/top.sls).
db:
  password: dev-only-database-password-not-a-secret-42
