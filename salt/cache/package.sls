{%- from tpldir ~ "/map.jinja" import memcached, redis with context %}

{#- Installing starts each daemon with Debian's configuration, on 127.0.0.1 only,
    until cache.config writes ours. A kind turned off is removed. #}
{%- if memcached.enabled %}
cache-memcached-package-installed:
  pkg.installed:
    - name: {{ memcached.package }}
{%- else %}
cache-memcached-package-removed:
  pkg.removed:
    - name: {{ memcached.package }}
{%- endif %}

{%- if redis.enabled %}
cache-redis-package-installed:
  pkg.installed:
    - pkgs: {{ redis.packages | json }}
{%- else %}
cache-redis-package-removed:
  pkg.removed:
    - pkgs: {{ redis.packages | json }}
{%- endif %}
