{%- from tpldir ~ "/map.jinja" import server with context %}

varnish-package-installed:
  pkg.installed:
    - name: {{ server.package }}
