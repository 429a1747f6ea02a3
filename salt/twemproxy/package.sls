{%- from tpldir ~ "/map.jinja" import twemproxy with context %}

{#- Debian's unit starts nothing until twemproxy.config writes the file it needs. #}
twemproxy-nutcracker-package-installed:
  pkg.installed:
    - name: {{ twemproxy.package }}
