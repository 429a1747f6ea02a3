{%- from tpldir ~ "/map.jinja" import carbon, web with context %}

{#- Installing graphite-carbon starts carbon-cache with Debian's defaults:
    listening on 0.0.0.0 and creating whisper files with its default
    retentions, which the vitals other hosts push already would keep for good.
    So the service is masked until it is configured (the first install only);
    monitoring.service unmasks and starts it. #}
monitoring-carbon-service-masked-for-install:
  service.masked:
    - name: {{ carbon.service }}
    - unless:
      - fun: pkg.version
        args:
          - graphite-carbon

monitoring-carbon-package-installed:
  pkg.installed:
    - pkgs: {{ carbon.packages | json }}
    - require:
      - service: monitoring-carbon-service-masked-for-install

monitoring-web-package-installed:
  pkg.installed:
    - pkgs: {{ web.packages | json }}
