{%- from tpldir ~ "/map.jinja" import server with context %}

db-server-package-installed:
  pkg.installed:
    - pkgs: {{ server.packages | json }}
