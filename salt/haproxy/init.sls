{%- from 'haproxy/map.jinja' import haproxy with context %}
{%- from 'nginx/map.jinja' import nginx with context %}
{%- from 'tls/map.jinja' import tls with context %}
{%- from 'app/map.jinja' import projects with context %}

include:
  - tls
  - tls.acme

haproxy-packages-installed:
  pkg.installed:
    - pkgs: {{ haproxy.packages | json }}

haproxy-admin-directory-present:
  file.directory:
    - name: {{ salt['file.dirname'](haproxy.admin_socket) }}
    - user: root
    - group: root
    - mode: '0700'
{%- for name in projects %}

# HAProxy finds a certificate's key beside it as <certificate>.key.
haproxy-{{ name }}-tls-key-linked:
  file.symlink:
    - name: {{ tls.dir }}/{{ name }}.crt.key
    - target: {{ name }}.key
    - require:
      - tls-{{ name }}-key-managed
{%- endfor %}

# check_cmd tests the new file before it replaces the old one: a broken
# configuration never reaches the disk, let alone the running HAProxy.
haproxy-config-managed:
  file.managed:
    - name: {{ haproxy.config }}
    - source: salt://haproxy/files/haproxy.cfg.jinja
    - template: jinja
    - context:
        haproxy: {{ haproxy | json }}
        nginx: {{ nginx | json }}
        tls: {{ tls | json }}
        projects: {{ projects | json }}
    - mode: '0644'
    - check_cmd: /usr/sbin/haproxy -c -q -f
    - require:
      - pkg: haproxy-packages-installed
      - file: haproxy-admin-directory-present
{%- for name in projects %}
      - file: haproxy-{{ name }}-tls-key-linked
      - tls-{{ name }}-certificate-managed
{%- endfor %}

# Before a reload, what the runtime API set (a server drained or in
# maintenance during a rollout) is written where the new process reads it.
haproxy-server-state-saved:
  haproxy_runtime.state_saved:
    - name: {{ haproxy.server_state_file }}
    - prereq:
      - file: haproxy-config-managed

# A reload starts new workers with the new backends; the old ones finish
# their requests.
haproxy-service-running:
  service.running:
    - name: {{ haproxy.service }}
    - enable: True
    - reload: True
    - watch:
      - file: haproxy-config-managed
{%- for name in projects %}
      - tls-{{ name }}-certificate-managed
{%- endfor %}
