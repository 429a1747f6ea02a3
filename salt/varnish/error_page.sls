{#- On the app hosts (salt/top.sls): the site's error page for the varnish hosts'
    vcl_backend_error. The site's own generate_500_html renders it into the
    release `current` points to, once per release; the Salt mine then gets it
    (hpd_error_page: hpd_edge.error_page), and the varnish hosts' highstate
    writes it (hpd_edge.site_error_page). After a deploy switches `current`,
    apply this on the app hosts, then `varnish` on the varnish hosts. #}
{%- from "site/map.jinja" import paths with context %}

include:
  - site

varnish-error-page-rendered:
  cmd.run:
    - name: {{ paths.manage }} generate_500_html {{ paths.current }}/500.html
    - creates: {{ paths.current }}/500.html
    - require:
      - sls: site

varnish-error-page-published:
  module.run:
    - mine.update: []
    - onchanges:
      - cmd: varnish-error-page-rendered
