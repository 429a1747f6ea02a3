{%- from tpldir ~ "/map.jinja" import site, paths, user with context %}
{%- set local_repository = salt['hpd_site.local_repository'](site.repository) %}

include:
  - .package

site-config-directory:
  file.directory:
    - name: {{ paths.config_dir }}
    - user: root
    - group: root
    - mode: '0755'

{#- The settings the site reads (HPD_SITE_CONFIG): SECRET_KEY and the database
    password in it, so root:<app group> 0640 and no diff in the state output.
    The template reads the secrets itself, on the minion. #}
site-config-settings-file-managed:
  file.managed:
    - name: {{ paths.config }}
    - source: salt://{{ tpldir }}/files/settings.json.jinja
    - template: jinja
    - user: root
    - group: {{ user.group }}
    - mode: '0640'
    - show_changes: False
    - require:
      - file: site-config-directory

{#- The environment of the site's processes, for systemd units and the
    <site>-manage command (no secret in it). #}
site-config-env-file-managed:
  file.managed:
    - name: {{ paths.env_file }}
    - source: salt://{{ tpldir }}/files/site.env.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: site-config-directory

site-config-manage-command-managed:
  file.managed:
    - name: {{ paths.manage }}
    - source: salt://{{ tpldir }}/files/manage.sh.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0755'

site-config-venvs-directory:
  file.directory:
    - name: {{ paths.venvs }}
    - user: {{ user.name }}
    - group: {{ user.group }}
    - mode: '0750'
{%- if local_repository %}

{#- git refuses to read a repository on the host owned by another user
    (CVE-2022-24765) unless told that this one is safe. #}
site-config-git-safe-directory:
  git.config_set:
    - name: safe.directory
    - value: {{ local_repository }}
    - user: {{ user.name }}
    - global: True
    - require:
      - pkg: site-package-installed
{%- endif %}
