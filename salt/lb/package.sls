{%- from tpldir ~ "/map.jinja" import haproxy with context %}

lb-haproxy-package-installed:
  pkg.installed:
    - name: {{ haproxy.package }}
