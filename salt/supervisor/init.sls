{%- from 'supervisor/map.jinja' import supervisor with context %}

supervisor-packages-installed:
  pkg.installed:
    - pkgs: {{ supervisor.packages | json }}

supervisor-service-running:
  service.running:
    - name: {{ supervisor.service }}
    - enable: True
    - require:
      - pkg: supervisor-packages-installed
