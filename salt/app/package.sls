{%- from tpldir ~ "/map.jinja" import emperor with context %}

app-uwsgi-package-installed:
  pkg.installed:
    - pkgs: {{ emperor.packages | json }}
