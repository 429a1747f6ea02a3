{%- from tpldir ~ "/map.jinja" import memcached, redis with context %}

include:
  - .config

{#- A restart empties the cache: only a changed configuration makes one. #}
{%- if memcached.enabled %}
cache-memcached-service-running:
  service.running:
    - name: {{ memcached.service }}
    - enable: True
    - watch:
      - file: cache-memcached-config-file-managed
{%- endif %}

{%- if redis.enabled %}
cache-redis-service-running:
  service.running:
    - name: {{ redis.service }}
    - enable: True
    - watch:
      - file: cache-redis-config-file-managed
{%- endif %}
