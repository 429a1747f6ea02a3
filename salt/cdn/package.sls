{#- Installing nginx starts it with Debian's default site on port 80, which
    haproxy holds on a host that is also the lb (or takes, if nginx gets there
    first). So nginx is masked until it is configured (the first install only);
    cdn.service unmasks and starts it. #}
cdn-nginx-service-masked-for-install:
  service.masked:
    - name: nginx
    - unless:
      - fun: pkg.version
        args:
          - nginx

cdn-nginx-package-installed:
  pkg.installed:
    - pkgs:
      - nginx-light
      - libnginx-mod-http-brotli-static
    - require:
      - service: cdn-nginx-service-masked-for-install

cdn-rsync-package-installed:
  pkg.installed:
    - name: rsync
