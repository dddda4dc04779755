{%- from 'nginx/map.jinja' import nginx with context %}
{%- from 'tls/map.jinja' import tls with context %}
{%- from 'app/map.jinja' import projects with context %}

include:
  - tls
  - tls.acme
  # nginx-<p>-site-healthy checks the release that the app state puts live.
  - app

nginx-packages-installed:
  pkg.installed:
    - pkgs: {{ nginx.packages | json }}

# Debian's default site grabs port 80 as default_server.
nginx-default-site-absent:
  file.absent:
    - name: {{ nginx.sites_enabled }}/default
    - require:
      - pkg: nginx-packages-installed

nginx-shutdown-timeout-managed:
  file.managed:
    - name: {{ nginx.modules_enabled }}/90-salt-django-shutdown.conf
    - contents: |
        # Managed by salt-django: old workers of a reload do not wait on websockets forever.
        worker_shutdown_timeout {{ nginx.worker_shutdown_timeout }};
    - mode: '0644'
    - require:
      - pkg: nginx-packages-installed
{%- for name, project in projects.items() %}

nginx-{{ name }}-snippets-managed:
  file.managed:
    - names:
      - {{ nginx.snippets }}/{{ name }}-security-headers.conf:
        - source: salt://nginx/files/security-headers.conf.jinja
      - {{ nginx.snippets }}/{{ name }}-proxy.conf:
        - source: salt://nginx/files/proxy.conf.jinja
      - {{ nginx.snippets }}/{{ name }}-locations.conf:
        - source: salt://nginx/files/locations.conf.jinja
    - template: jinja
    - context:
        project: {{ project | json }}
        nginx: {{ nginx | json }}
    - mode: '0644'
    - require:
      - pkg: nginx-packages-installed

nginx-{{ name }}-site-managed:
  file.managed:
    - name: {{ nginx.sites_available }}/{{ name }}.conf
    - source: salt://nginx/files/site.conf.jinja
    - template: jinja
    - context:
        project: {{ project | json }}
        nginx: {{ nginx | json }}
        tls: {{ tls | json }}
    - mode: '0644'
    - require:
      - pkg: nginx-packages-installed
      - django_release: app-{{ name }}-serving-socket-adopted

nginx-{{ name }}-legacy-upstream-absent:
  file.absent:
    - name: /etc/nginx/salt-django/{{ name }}-upstream.conf
    - require:
      - file: nginx-{{ name }}-site-managed

nginx-{{ name }}-site-enabled:
  file.symlink:
    - name: {{ nginx.sites_enabled }}/{{ name }}.conf
    - target: {{ nginx.sites_available }}/{{ name }}.conf
    - require:
      - file: nginx-{{ name }}-site-managed
{%- endfor %}

{#- Projects that left pillar: their site goes (salt/app says what stays). #}
{%- set removed = salt['django_removed.removed'](nginx.sites_available) %}
{%- for name, conf in removed.items() %}

nginx-{{ name }}-site-absent:
  file.absent:
    - names:
      - {{ nginx.sites_enabled }}/{{ name }}.conf
      - {{ conf }}
      - {{ nginx.snippets }}/{{ name }}-security-headers.conf
      - {{ nginx.snippets }}/{{ name }}-proxy.conf
      - {{ nginx.snippets }}/{{ name }}-locations.conf
{%- endfor %}

# A broken configuration must not reach the running Nginx.
nginx-config-tested:
  cmd.run:
    - name: nginx -t
    - onchanges:
      - file: nginx-default-site-absent
      - file: nginx-shutdown-timeout-managed
{%- for name in removed %}
      - file: nginx-{{ name }}-site-absent
{%- endfor %}
{%- for name in projects %}
      - file: nginx-{{ name }}-snippets-managed
      - file: nginx-{{ name }}-site-managed
      - file: nginx-{{ name }}-site-enabled
      - file: nginx-{{ name }}-legacy-upstream-absent
      - tls-{{ name }}-certificate-managed
{%- endfor %}

# Before a release: its switch may need what the new configuration adds (a
# slot's port, app_server:kind mod_wsgi).
nginx-service-running:
  service.running:
    - name: {{ nginx.service }}
    - enable: True
    - reload: True
    - require:
      - cmd: nginx-config-tested
{%- if projects %}
    - require_in:
{%- for name in projects %}
      - django_release: app-{{ name }}-release-deployed
{%- endfor %}
{%- endif %}
    - watch:
      - file: nginx-default-site-absent
      - file: nginx-shutdown-timeout-managed
{%- for name in removed %}
      - file: nginx-{{ name }}-site-absent
{%- endfor %}
{%- for name in projects %}
      - file: nginx-{{ name }}-snippets-managed
      - file: nginx-{{ name }}-site-managed
      - file: nginx-{{ name }}-site-enabled
      - file: nginx-{{ name }}-legacy-upstream-absent
      - tls-{{ name }}-certificate-managed
{%- endfor %}
{%- for name, project in projects.items() %}

nginx-{{ name }}-site-healthy:
  django_release.healthy:
    - name: http://127.0.0.1/healthz
    - host: {{ project.primary_domain | json }}
    - require:
      - service: nginx-service-running
      - django_release: app-{{ name }}-release-deployed
{%- endfor %}
