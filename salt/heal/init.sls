# heal: every host keeps the services of its roles running (pillar `heal`) and
# watches its thresholds (pillar `alerts`). systemd restarts a service that
# fails; a beacon reports one that stops, and the master's reactor starts it
# again (reactor/heal.sls, hpd_heal.heal on the host).
include:
  - .systemd
  - .beacons
