# cdn: the CDN origin. nginx serves each site's static files (the deploy's
# collectstatic output: hashed names, .gz and .br beside them, sent as they are)
# from <cdn:root>/<site> at /<site>/; the deploy pushes them from an app host to
# the write-only rsync daemon module `origin` (salt/cdn/push_client.sls gives
# the app hosts the password).
include:
  - .package
  - .config
  - .service
