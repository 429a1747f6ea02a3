# common: what every host gets (packages, time zone, the app user, /srv layout).
include:
  - .package
  - .config
  - .vitals
