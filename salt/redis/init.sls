{%- from 'redis/map.jinja' import redis with context %}
{%- from 'app/map.jinja' import projects with context %}

redis-packages-installed:
  pkg.installed:
    - pkgs: {{ redis.packages | json }}

# The file holds passwords: readable by redis only, and never diffed into
# the state output.
redis-config-managed:
  file.managed:
    - name: {{ redis.config }}
    - source: salt://redis/files/redis.conf.jinja
    - template: jinja
    - context:
        redis: {{ redis | json }}
        projects: {{ projects | list | json }}
    - user: redis
    - group: redis
    - mode: '0640'
    - show_changes: False
    - require:
      - pkg: redis-packages-installed

redis-service-running:
  service.running:
    - name: {{ redis.service }}
    - enable: True
    - watch:
      - file: redis-config-managed
