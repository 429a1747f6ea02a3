{%- from tpldir ~ "/map.jinja" import server with context %}

include:
  - .package

{#- Debian's unit hard-codes its options (-a :6081, -s malloc,256m) and reads no
    environment file: the drop-in replaces ExecStart. #}
varnish-unit-override-managed:
  file.managed:
    - name: /etc/systemd/system/{{ server.service }}.service.d/hpd.conf
    - source: salt://{{ tpldir }}/files/varnish.override.conf.jinja
    - template: jinja
    - makedirs: True
    - user: root
    - group: root
    - mode: '0644'

{#- systemd does not notice a new drop-in by itself (NeedDaemonReload stays no). #}
varnish-unit-daemon-reloaded:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: varnish-unit-override-managed

{#- What vcl_backend_error serves: the site's error page, as the app hosts
    publish it (salt/site/static.sls renders it with each release,
    salt/site/switch.sls publishes it); until one has, a plain page of our
    own, and the page Varnish has when none answers. #}
varnish-error-page-file-managed:
  file.managed:
    - name: {{ server.error_page }}
{%- if server.error_page_html %}
    - contents: {{ server.error_page_html | yaml_dquote }}
{%- else %}
    - source: salt://{{ tpldir }}/files/error.html
    - replace: False
{%- endif %}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - pkg: varnish-package-installed

{#- varnishd's own compile of the new VCL (the file comes last on the command
    line): a VCL that does not compile is never written, and the running one
    keeps serving. #}
varnish-vcl-file-managed:
  file.managed:
    - name: {{ server.vcl_file }}
    - source: salt://{{ tpldir }}/files/default.vcl.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: /usr/sbin/varnishd -C -f
    - require:
      - pkg: varnish-package-installed
