# common: what every host gets (packages, time zone, the app user, /srv layout,
# Salt's own work at a lower CPU priority than the services, sshd: salt/ssh).
include:
  - .package
  - .config
  - .minion
  - .vitals
  - ssh
