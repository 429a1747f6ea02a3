{%- from tpldir ~ "/map.jinja" import twemproxy with context %}

include:
  - .package

twemproxy-nutcracker-defaults-file-managed:
  file.managed:
    - name: {{ twemproxy.defaults_file }}
    - source: salt://{{ tpldir }}/files/nutcracker.default.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - pkg: twemproxy-nutcracker-package-installed

{#- With no cache host (or no cache kind) in the environment there is no pool:
    no file, and Debian's unit does not start. #}
twemproxy-nutcracker-config-file-managed:
{%- if twemproxy.pools %}
  file.managed:
    - name: {{ twemproxy.conf_file }}
    - source: salt://{{ tpldir }}/files/nutcracker.yml.jinja
    - template: jinja
    - makedirs: True
    - user: root
    - group: root
    - mode: '0644'
    {#- nutcracker's own check (the file to check comes last). #}
    - check_cmd: /usr/sbin/nutcracker --test-conf --conf-file
    - require:
      - pkg: twemproxy-nutcracker-package-installed
{%- else %}
  file.absent:
    - name: {{ twemproxy.conf_file }}
{%- endif %}
