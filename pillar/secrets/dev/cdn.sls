# The cdn role's secret in the dev environment: a throw-away value, public in
# this repository (hpd.settings refuses dev-only... values outside dev). The cdn
# and app hosts get this file, no other host (pillar/top.sls).
cdn:
  push:
    password: dev-only-cdn-push-password-not-a-secret-4
