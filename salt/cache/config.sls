{%- from tpldir ~ "/map.jinja" import memcached, redis with context %}

include:
  - .package

{%- if memcached.enabled %}
cache-memcached-config-file-managed:
  file.managed:
    - name: {{ memcached.conf_file }}
    - source: salt://{{ tpldir }}/files/memcached.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - pkg: cache-memcached-package-installed
{%- endif %}

{%- if redis.enabled %}
cache-redis-config-file-managed:
  file.managed:
    - name: {{ redis.conf_file }}
    - source: salt://{{ tpldir }}/files/redis.conf.jinja
    - template: jinja
    - user: redis
    - group: redis
    - mode: '0640'
    - require:
      - pkg: cache-redis-package-installed
{%- endif %}
