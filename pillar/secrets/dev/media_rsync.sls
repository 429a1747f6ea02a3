# The media rsync account's secret in the dev environment: a throw-away value,
# public in this repository (hpd.settings refuses dev-only... values outside
# dev). The app and backup hosts get this file, no other host (pillar/top.sls).
media_rsync:
  password: dev-only-media-rsync-password-not-a-secret-2
