{#- Installing starts sshd with Debian's configuration (root by key, passwords
    for everyone else) until ssh.config's drop-in is in place: in the same
    highstate, before any admin exists. #}
ssh-server-package-installed:
  pkg.installed:
    - pkgs: [openssh-server, sudo]
