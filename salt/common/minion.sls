{#- Salt's own work on a host (state runs, a deploy's builds and Django
    start-ups, beacons, schedule jobs) at a lower CPU priority than the
    services it runs: a deploy must not queue the requests the host serves.
    Measured (benchmarks/deploy_under_load.py's load during deploys, 6-host
    lab): p99 90-100 ms with the minion at nice 10 against 135-178 ms at 0,
    the deploys as fast. The drop-in holds from the minion's next start
    (CPUWeight where systemd has the cgroup v2 cpu controller, Nice
    everywhere); when it changes, the running minion's processes and threads
    (one process group: the job processes it forks inherit the value) are
    reniced at once. #}
{%- set nice = 10 %}

common-minion-priority-dropin-managed:
  file.managed:
    - name: /etc/systemd/system/salt-minion.service.d/hpd-priority.conf
    - makedirs: True
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (salt/common/minion.sls): Salt's work yields the CPU
        # to the services.
        [Service]
        Nice={{ nice }}
        CPUWeight=20

common-minion-priority-applied:
  cmd.run:
    - name: >-
        systemctl daemon-reload &&
        renice -n {{ nice }} -g "$(ps -o pgid= -p "$(systemctl show -p MainPID --value salt-minion)")"
    - onchanges:
      - file: common-minion-priority-dropin-managed
