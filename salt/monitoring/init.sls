# monitoring: Graphite on the monitoring host. carbon-cache stores the vitals
# every host pushes (salt/common/vitals.sls); graphite-web renders them.
include:
  - .package
  - .config
  - .service
