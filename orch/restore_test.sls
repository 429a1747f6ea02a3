# The restore test: on every backup host, the latest dump restored into a
# scratch database and each table's row count compared with the source
# (hpd_backup.restore_test). Any difference fails this orchestration, and
# salt-run exits non-zero.
#
#   salt-run state.orchestrate orch.restore_test
backup-restore-test-function:
  salt.function:
    - name: hpd_backup.restore_test
    - tgt: 'hpd:roles:backup'
    - tgt_type: pillar
