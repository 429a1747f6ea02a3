{#- orch.rollback: every app and worker host of the environment back to its
    previous release (the last that served before the release it serves:
    hpd_release.facts), or to the release deploy:release names, with
    orch.deploy's sequence: app hosts one batch at a time drained, switched,
    chain-reloaded, health-gated, back in
    the pool; then the workers, and that release's error page to Varnish. A
    host that fails its move (its health gate above all) stops the rollback
    there, out of the pool, for an operator.

      salt-run state.orchestrate orch.rollback [pillar='{"deploy": {"release": "<id>"} }']

    pillar deploy: release, env, batch, health_timeout, skip (as orch.deploy). #}
{%- from "orch/release.jinja" import get_plan, refused, notify, move, error_page with context %}
{%- set deploy = salt['pillar.get']('deploy', {}) %}
{%- set timeout = deploy.get('health_timeout', 120) %}
{%- set plan = get_plan({'release': deploy.get('release'), 'env': deploy.get('env'),
                         'batch': deploy.get('batch', 1), 'rollback': True,
                         'skip': deploy.get('skip')}) | load_json %}
{%- if 'Error' in plan %}
{{ refused('rollback-refused', plan) }}
{%- else %}

{{ notify('rollback-start', plan, 'rollback', step='start',
          comment=plan.previous | dictsort | map('join', ' to ') | join(', ')) }}
{%- for hosts_of_batch in plan.batches %}
{%-   set n = loop.index %}
{%-   set targets = [] %}
{%-   for host in hosts_of_batch if plan.previous[host] not in targets %}
{%-     do targets.append(plan.previous[host]) %}
{%-   endfor %}
{%-   for release in targets %}
{%-     set group = [] %}
{%-     for host in hosts_of_batch if plan.previous[host] == release %}
{%-       do group.append(host) %}
{%-     endfor %}

{{ notify('rollback-batch-' ~ n ~ '-' ~ loop.index ~ '-notify', plan, 'step',
          step='rollback batch ' ~ n, comment=(group | join(', ')) ~ ' to ' ~ release) }}
{{ move('rollback-batch-' ~ n ~ '-' ~ loop.index, plan, group, release, timeout,
        failhard=True) }}
{%-   endfor %}
{%- endfor %}
{%- set targets = [] %}
{%- for host in plan.worker if plan.previous[host] not in targets %}
{%-   do targets.append(plan.previous[host]) %}
{%- endfor %}
{%- for release in targets %}
{%-   set group = [] %}
{%-   for host in plan.worker if plan.previous[host] == release %}
{%-     do group.append(host) %}
{%-   endfor %}

rollback-workers-{{ loop.index }}:
  salt.state:
    - tgt: {{ group | json }}
    - tgt_type: list
    - sls: worker.restart
    - pillar: {{ {'deploy': dict(release=release)} | json }}
    - failhard: True
{%- endfor %}

{{ error_page('rollback', plan) }}

rollback-release-logged:
  salt.function:
    - name: hpd_release.log
    - tgt: {{ (plan.app + plan.worker) | json }}
    - tgt_type: list
    - arg: [{{ plan.site }}, rollback, {{ plan.release }}]
    - kwarg: {{ {'who': plan.who} | json }}
    - parallel: True
{%- set tail = [{'salt': 'rollback-release-logged'}] %}
{%- if plan.varnish %}
{%-   do tail.append({'salt': 'rollback-error-page-served'}) %}
{%- endif %}

{{ notify('rollback-finish', plan, 'finish', step='rollback', requisites={'require': tail}) }}

rollback-unlocked:
  salt.runner:
    - name: hpd_deploy.unlock
    - site: {{ plan.site }}
    - env: {{ plan.env }}
{%- endif %}
