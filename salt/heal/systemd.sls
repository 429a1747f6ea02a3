{%- from tpldir ~ "/map.jinja" import heal with context %}

{#- The first line: systemd restarts each service of this host's roles when it
    fails, whatever its package's unit says. A drop-in, so the package's unit
    stays as Debian ships it. #}
{%- set services = salt['hpd_heal.service_units']() %}
{%- for unit in services %}

heal-systemd-{{ unit }}-restart-managed:
  file.managed:
    - name: /etc/systemd/system/{{ unit }}.d/hpd-restart.conf
    - makedirs: True
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (salt/heal): systemd restarts {{ unit }} when it
        # fails, up to a limit (pillar heal); the master's reactor starts it
        # when it stops or systemd gave up on it.
        [Unit]
        StartLimitIntervalSec={{ heal.start_limit_interval }}
        StartLimitBurst={{ heal.start_limit_burst }}

        [Service]
        Restart=on-failure
        RestartSec={{ heal.restart_sec }}
{%- endfor %}

{%- if services %}

heal-systemd-daemon-reloaded:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
{%- for unit in services %}
      - file: heal-systemd-{{ unit }}-restart-managed
{%- endfor %}
{%- endif %}
