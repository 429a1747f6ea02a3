{%- from tpldir ~ "/map.jinja" import server with context %}

backup-server-package-installed:
  pkg.installed:
    - pkgs: {{ server.packages | json }}
