# ssh: sshd on every host (included by common), key logins only, for the
# members of the admin group only; the admins, their keys and their sudo from
# pillar `ssh` (none unless pillar names them).
include:
  - .package
  - .config
  - .service
  - .admins
