{%- from tpldir ~ "/map.jinja" import common with context %}

common-package-installed:
  pkg.installed:
    - pkgs: {{ common.packages | json }}
