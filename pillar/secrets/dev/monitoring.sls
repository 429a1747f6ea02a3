# The monitoring role's secrets in the dev environment: throw-away values,
# public in this repository (hpd.settings refuses dev-only... values outside
# dev). Only hosts with the monitoring role get this file (pillar/top.sls).
monitoring:
  web:
    secret_key: dev-only-graphite-web-key-not-a-secret-0123456789
  alerts:
    webhook_token: dev-only-alerts-webhook-token
