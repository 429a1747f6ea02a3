{#- orch.deploy: the site's revision deploy:rev to the app and worker hosts of
    its environment, rolling, with a health gate and automatic rollback.

      salt-run state.orchestrate orch.deploy pillar='{"deploy": {"rev": "<git ref>"} }'

    pillar deploy: rev (default: the site:rev of the environment's app hosts,
    what a highstate builds), env (default: the one environment with app
    hosts), batch (app hosts per batch, default 1), keep (releases kept on each
    host, default 5), health_timeout (seconds, default 120), skip (hosts the
    deploy leaves out, e.g. one out of the pool: any other host of the
    inventory that does not answer stops the deploy). orch/README.md
    describes the steps. #}
{%- from "orch/release.jinja" import get_plan, refused, notify, move, would, error_page with context %}
{%- set deploy = salt['pillar.get']('deploy', {}) %}
{%- set batch = deploy.get('batch', 1) %}
{%- set keep = deploy.get('keep', 5) %}
{%- set timeout = deploy.get('health_timeout', 120) %}
{%- set plan = get_plan({'rev': deploy.get('rev'), 'env': deploy.get('env'),
                         'batch': batch, 'skip': deploy.get('skip')}) | load_json %}
{%- if 'Error' in plan %}
{{ refused('deploy-refused', plan) }}
{%- else %}
{%- set release = plan.release %}
{%- set hosts = plan.app + plan.worker %}
{%- set build = {'deploy': dict(sha=plan.sha, release=release)} %}
{%- set first = plan.app[0] %}
{%- set protect = plan.previous.values() | reject('none') | unique | list %}
{%- set dry = opts.get('test', False) %}

{{ notify('deploy-start', plan, 'start', comment='rev ' ~ plan.rev ~ ' (' ~ plan.rev_from ~ ', '
          ~ plan.sha ~ ') to ' ~ (hosts | join(', ')) ~ ' in batches ' ~ (plan.batches | json)) }}

{#- Steps 1, 2 and 4: the release checked out and its virtualenv on every
    host, and on the app hosts its static files collected (hashed, .gz, .br;
    uWSGI serves them too), in one state run per host. #}
{{ notify('deploy-checkout-notify', plan, 'step', step='checkout',
          comment='with its virtualenv, and its static files on ' ~ (plan.app | join(', '))) }}

deploy-checkout:
  salt.state:
    - tgt: {{ hosts | json }}
    - tgt_type: list
    - sls: {{ ['site.checkout'] if dry else ['site.checkout', 'site.venv', 'site.static'] }}
    - pillar: {{ build | json }}
    - failhard: True
{%- if dry %}
{{ would('deploy-venv', 'build or reuse the virtualenv of ' ~ release ~ ' on ' ~ (hosts | join(', '))) }}
{{ would('deploy-static', 'collect the static files of ' ~ release ~ ' on '
         ~ (plan.app | join(', '))) }}
{{ would('deploy-migrate', 'migrate the database once, on ' ~ first) }}
{{ would('deploy-static-pushed', 'push the static files of ' ~ release
         ~ ' to the CDN origin from ' ~ first) }}
{%- else %}

{#- Step 3: the migrations, once, on the first app host, before any switch. #}
{{ notify('deploy-migrate-notify', plan, 'step', step='migrate', comment='on ' ~ first) }}

deploy-migrate:
  salt.state:
    - tgt: {{ first }}
    - sls: site.migrate
    - pillar: {{ build | json }}
    - failhard: True

{#- Step 4: the static files pushed to the CDN origin from the first app host. #}
{{ notify('deploy-static-notify', plan, 'step', step='static', comment='from ' ~ first) }}

deploy-static-pushed:
  salt.function:
    - name: hpd_release.push_static
    - tgt: {{ first }}
    - arg: [{{ release }}]
    - failhard: True
{%- endif %}

{#- Step 5: the app hosts, batch after batch. A batch that fails puts every
    host switched so far back on its previous release, one at a time: the
    failed batch's hosts first (out of the pool already), then the earlier
    batches from the last (plan.undo), so the pool never empties; the deploy
    stops there. #}
{%- for hosts_of_batch in plan.batches %}
{%-   set n = loop.index %}
{%-   set switched = plan.undo[loop.index0] %}

{{ notify('deploy-batch-' ~ n ~ '-notify', plan, 'step', step='batch ' ~ n,
          comment=hosts_of_batch | join(', ')) }}
{%-   if dry %}
{{ would('deploy-batch-' ~ n, 'drain ' ~ (hosts_of_batch | join(', ')) ~ ' on '
         ~ (plan.lb | join(', ')) ~ ', switch them to ' ~ release ~ ', chain-reload uWSGI, '
         ~ 'wait for /health/ to report it, put them back in the pool') }}
{%-   else %}
{{ move('deploy-batch-' ~ n, plan, hosts_of_batch, release, timeout) }}
{%-     set batch_ids = ['deploy-batch-' ~ n ~ '-switch', 'deploy-batch-' ~ n ~ '-health'] %}
{%-     for host in hosts_of_batch if plan.lb %}
{%-       do batch_ids.extend(['deploy-batch-' ~ n ~ '-drain-' ~ host,
                               'deploy-batch-' ~ n ~ '-ready-' ~ host]) %}
{%-     endfor %}
{%-     set onfail = {'onfail': []} %}
{%-     for id in batch_ids %}
{%-       do onfail.onfail.append({'salt': id}) %}
{%-     endfor %}

{{ notify('deploy-batch-' ~ n ~ '-rollback-notify', plan, 'rollback', step='batch ' ~ n,
          comment='release ' ~ release ~ ' failed on ' ~ (hosts_of_batch | join(', '))
                  ~ ': rolling back ' ~ (switched | join(', ')), requisites=onfail) }}
{%-     for host in switched %}
{{ move('deploy-batch-' ~ n ~ '-rollback-' ~ host, plan, [host], plan.previous[host], timeout,
        requisites=onfail) }}
{%-     endfor %}

deploy-batch-{{ n }}-failed:
  test.fail_without_changes:
    - comment: {{ ('deploy of ' ~ release ~ ' failed on ' ~ (hosts_of_batch | join(', '))
               ~ ' (see deploy-batch-' ~ n ~ '-health or -switch for why); rolled back '
               ~ (switched | join(', ')) ~ ' to their previous release') | json }}
    - onfail: {{ onfail.onfail | json }}
    - failhard: True
{%-   endif %}
{%- endfor %}

{#- Step 6: the workers switched and restarted gracefully, after every app
    host (a restart returns once the worker consumes tasks: Type=notify); then,
    in parallel: Varnish's error page of the release, the release log, the
    deploy's mark in Graphite, the old releases pruned. The deploy finishes
    when all of them succeeded. #}
{%- set tail = [] %}
{%- if plan.worker and dry %}
{{ would('deploy-workers', 'switch ' ~ (plan.worker | join(', ')) ~ ' to ' ~ release
         ~ ' and restart their workers gracefully') }}
{%- elif plan.worker %}
{%-   do tail.append({'salt': 'deploy-workers'}) %}

{{ notify('deploy-workers-notify', plan, 'step', step='workers',
          comment=plan.worker | join(', ')) }}

deploy-workers:
  salt.state:
    - tgt: {{ plan.worker | json }}
    - tgt_type: list
    - sls: worker.restart
    - pillar: {{ build | json }}

{#- A worker host that fails (its workers do not start on the release) puts
    every host back: the workers on their previous release, then the app
    hosts, the last batch first (plan.undo), so the pool never empties. #}
{%-   set onfail = {'onfail': [{'salt': 'deploy-workers'}]} %}
{%-   set back = {} %}
{%-   for host in plan.worker if plan.previous[host] %}
{%-     do back.setdefault(plan.previous[host], []).append(host) %}
{%-   endfor %}

{{ notify('deploy-workers-rollback-notify', plan, 'rollback', step='workers',
          comment='release ' ~ release ~ ' failed on the workers (' ~ (plan.worker | join(', '))
                  ~ '): rolling back every host', requisites=onfail) }}
{%-   for previous, workers in back | dictsort %}

deploy-workers-rollback-{{ loop.index }}:
  salt.state:
    - tgt: {{ workers | json }}
    - tgt_type: list
    - sls: worker.restart
    - pillar: {{ {'deploy': dict(release=previous)} | json }}
    - onfail: {{ onfail.onfail | json }}
{%-   endfor %}
{%-   for host in plan.undo[-1] if plan.previous[host] %}
{{ move('deploy-workers-rollback-' ~ host, plan, [host], plan.previous[host], timeout,
        requisites=onfail) }}
{%-   endfor %}

deploy-workers-failed:
  test.fail_without_changes:
    - comment: {{ ('deploy of ' ~ release ~ ' failed on the workers (see deploy-workers '
                   ~ 'for why); rolled back every host to its previous release') | json }}
    - onfail: {{ onfail.onfail | json }}
    - failhard: True
{%- endif %}

{%- if not dry %}
{{ error_page('deploy', plan) }}
{%-   if plan.varnish %}
{%-     do tail.append({'salt': 'deploy-error-page-served'}) %}
{%-   endif %}
{%- endif %}

{#- Audit and housekeeping. #}
deploy-release-logged:
  salt.function:
    - name: hpd_release.log
    - tgt: {{ hosts | json }}
    - tgt_type: list
    - arg: [{{ plan.site }}, deploy, {{ release }}]
    - kwarg: {{ {'sha': plan.sha, 'rev': plan.rev, 'who': plan.who} | json }}
    - parallel: True

deploy-marked:
  salt.function:
    - name: hpd_release.mark
    - tgt: {{ first }}
    - arg: [{{ plan.site }}]
    - parallel: True

deploy-pruned:
  salt.function:
    - name: hpd_release.prune
    - tgt: {{ hosts | json }}
    - tgt_type: list
    - kwarg: {{ {'keep': keep, 'protect': protect} | json }}
    - parallel: True
{%- do tail.extend([{'salt': 'deploy-release-logged'}, {'salt': 'deploy-marked'},
                    {'salt': 'deploy-pruned'}]) %}

{{ notify('deploy-finish', plan, 'finish', requisites={'require': tail}) }}

deploy-unlocked:
  salt.runner:
    - name: hpd_deploy.unlock
    - site: {{ plan.site }}
    - env: {{ plan.env }}
{%- endif %}
