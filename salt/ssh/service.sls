include:
  - .config

{#- A reload (Debian's unit runs sshd -t first, then SIGHUP) keeps every open
    session; sshd re-reads its configuration and listens on the new port. #}
ssh-server-service-running:
  service.running:
    - name: ssh
    - enable: True
    - reload: True
    - watch:
      - file: ssh-server-dropin-managed
