# The site's secrets in the dev environment: throw-away values, public in this
# repository (hpd.settings refuses dev-only... values outside dev). The app and
# worker hosts get this file, no other host (pillar/top.sls).
site:
  secret_key: dev-only-django-secret-key-not-a-secret-7f3a9c1e5b2d8046aa
