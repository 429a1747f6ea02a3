{%- from "db/map.jinja" import server with context %}
{%- from tpldir ~ "/map.jinja" import replication, primary, slot with context %}

include:
  - .config
  - db.service

{#- A data directory that is not a standby yet (no standby.signal: the
    package's fresh cluster) or one marked hpd-rebuild (orch.db_failover marks
    the old primary it fences, now a replica in pillar; an operator marks the
    replicas after a point-in-time restore of the primary, whose data they
    went past) is replaced by a base backup of the
    primary, taken through this replica's slot, with -R writing standby.signal
    and the connection to the primary; the service is unmasked (fencing masks
    it) and started. The backup goes to a new directory first: the old one
    stays until the copy is whole. Before db.service, which cannot start a
    masked service. When every host is highstated at once, the primary's
    replication role, slot and pg_hba entry may not be there yet: the state
    retries (db_replica:retry) until they are. #}
db_replica-basebackup-done:
  cmd.run:
    - name: >-
        runuser -u {{ server.user }} -- sh -c 'rm -rf {{ server.data_dir }}.new
        && pg_basebackup -h {{ primary }} -p {{ server.port }}
        -U {{ replication.replication_user }} -w -D {{ server.data_dir }}.new
        -R -S {{ slot }} -X stream -c fast'
        && systemctl stop {{ server.service }}
        && rm -rf {{ server.data_dir }}
        && mv {{ server.data_dir }}.new {{ server.data_dir }}
        && systemctl unmask {{ server.service }}
        && systemctl start {{ server.service }}
    - cwd: /
    - unless: test -f {{ server.data_dir }}/standby.signal -a ! -f {{ server.data_dir }}/hpd-rebuild
    - retry:
        attempts: {{ replication.retry.attempts }}
        interval: {{ replication.retry.interval }}
    - require:
      - file: db_replica-passfile-file-managed
      - sls: db.config
    - require_in:
      - service: db-postgresql-service-running

{#- A replica takes no pgBackRest backups, its primary does (salt/db/pitr.sls):
    the timer a host keeps from when it was the primary (orch.db_failover
    highstates the promoted host as db) is stopped and disabled. #}
db_replica-pitr-backup-timer-dead:
  service.dead:
    - name: hpd-pgbackrest-backup.timer
    - enable: False
