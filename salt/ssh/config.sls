{%- from tpldir ~ "/map.jinja" import ssh with context %}

include:
  - .package

{#- What file.managed's check_cmd runs on a new drop-in before it replaces the
    old one: sshd -t on the whole configuration as sshd will read it. #}
ssh-server-check-script-managed:
  file.managed:
    - name: /usr/local/sbin/hpd-sshd-check
    - source: salt://{{ tpldir }}/files/hpd-sshd-check
    - user: root
    - group: root
    - mode: '0755'

{#- sshd takes the first value it reads, and Debian's sshd_config includes
    sshd_config.d/*.conf first, in name order: 00- goes before any other
    drop-in (a cloud image's 50-cloud-init.conf turns passwords on). A drop-in
    that sshd -t refuses is not written, so sshd is never reloaded with it. #}
ssh-server-dropin-managed:
  file.managed:
    - name: /etc/ssh/sshd_config.d/00-hpd.conf
    - source: salt://{{ tpldir }}/files/00-hpd.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: /usr/local/sbin/hpd-sshd-check
    - require:
      - pkg: ssh-server-package-installed
      - file: ssh-server-check-script-managed
