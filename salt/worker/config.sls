{%- from tpldir ~ "/map.jinja" import unit with context %}

worker-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ unit }}@.service
    - source: salt://{{ tpldir }}/files/worker@.service.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
