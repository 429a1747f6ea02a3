{%- from tpldir ~ "/map.jinja" import haproxy with context %}

include:
  - .package

lb-tls-directory-managed:
  file.directory:
    - name: {{ haproxy.cert_dir }}
    - user: root
    - group: root
    - mode: '0700'
    - require:
      - pkg: lb-haproxy-package-installed

{#- haproxy reads the key from <certificate>.key beside the certificate. #}
{%- if haproxy.self_signed %}

{#- dev: a key and a self-signed certificate for the site's domains, made on
    the host (Salt's x509_v2), renewed 30 days before they expire. #}
lb-tls-key-managed:
  x509.private_key_managed:
    - name: {{ haproxy.key_file }}
    - algo: ec
    - keysize: 256
    - mode: '0600'
    - require:
      - file: lb-tls-directory-managed

lb-tls-certificate-managed:
  x509.certificate_managed:
    - name: {{ haproxy.cert_file }}
    - signing_private_key: {{ haproxy.key_file }}
    - CN: {{ haproxy.domains[0] }}
    - subjectAltName: {{ haproxy.domains | map('regex_replace', '^', 'DNS:') | join(', ') }}
    - basicConstraints: critical, CA:false
    - days_valid: 365
    - days_remaining: 30
    - mode: '0644'
    - require:
      - x509: lb-tls-key-managed

{%- else %}

lb-tls-key-managed:
  file.managed:
    - name: {{ haproxy.key_file }}
    - source: salt://{{ tpldir }}/files/tls-key.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False
    - require:
      - file: lb-tls-directory-managed

lb-tls-certificate-managed:
  file.managed:
    - name: {{ haproxy.cert_file }}
    - source: salt://{{ tpldir }}/files/tls-certificate.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: lb-tls-directory-managed

{%- endif %}

lb-haproxy-tool-managed:
  file.managed:
    - name: {{ haproxy.tool }}
    - source: salt://{{ tpldir }}/files/hpd-haproxy.jinja
    - template: jinja
    - context:
        socket: {{ haproxy.socket }}
        tool: {{ haproxy.tool }}
    - user: root
    - group: root
    - mode: '0700'

lb-haproxy-unit-override-managed:
  file.managed:
    - name: /etc/systemd/system/{{ haproxy.service }}.service.d/hpd.conf
    - source: salt://{{ tpldir }}/files/haproxy.override.conf.jinja
    - template: jinja
    - context:
        tool: {{ haproxy.tool }}
        state_file: {{ haproxy.state_file }}
    - makedirs: True
    - user: root
    - group: root
    - mode: '0644'

{#- systemd does not notice a new drop-in by itself (NeedDaemonReload stays no). #}
lb-haproxy-unit-daemon-reloaded:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: lb-haproxy-unit-override-managed

{#- haproxy's own check of the new file (it comes last on the command line): a
    file haproxy refuses is never written, and the running haproxy keeps
    serving the one it has. #}
lb-haproxy-config-file-managed:
  file.managed:
    - name: {{ haproxy.conf_file }}
    - source: salt://{{ tpldir }}/files/haproxy.cfg.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: /usr/sbin/haproxy -c -f
    - require:
      - pkg: lb-haproxy-package-installed
      - lb-tls-key-managed
      - lb-tls-certificate-managed

{#- The pool haproxy now has: kept for a host whose address is not found (hpd_edge.app_pool). #}
lb-pool-file-managed:
  file.managed:
    - name: {{ haproxy.known_pool_file }}
    - contents: {{ haproxy.pool | json | yaml_dquote }}
    - makedirs: True
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: lb-haproxy-config-file-managed
