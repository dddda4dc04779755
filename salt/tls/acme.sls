{%- from 'tls/map.jinja' import tls with context %}
{%- from 'haproxy/map.jinja' import haproxy with context %}
{%- from 'app/map.jinja' import projects with context %}
{#- Included by salt/nginx and salt/haproxy: whichever ends TLS here asks for the certificates. #}
{%- set acme_projects = projects | dictsort | selectattr('1.tls.acme.directory') | map(attribute='0') | list %}
{%- if tls.server and acme_projects %}

tls-acme-packages-installed:
  pkg.installed:
    - pkgs:
      - {{ tls.acme.package }}

tls-acme-webroot-present:
  file.directory:
    - name: {{ tls.acme.webroot }}
    - mode: '0755'

tls-acme-hook-managed:
  file.managed:
    - name: {{ tls.acme.hook }}
    - source: salt://tls/files/acme-deployed.jinja
    - template: jinja
    - context:
        tls: {{ tls | json }}
        haproxy: {{ haproxy | json }}
    - makedirs: True
    - mode: '0755'
{%- for name in acme_projects %}
{%- set acme = projects[name].tls.acme %}

# Issued once (renewed by certbot's timer); the server answers the HTTP-01
# challenge on port 80 while it runs with the bootstrap certificate.
tls-{{ name }}-acme-certificate-issued:
  salt_django_acme.certificate:
    - name: {{ name }}
    - domains: {{ projects[name].domains | json }}
    - directory: {{ acme.directory | json }}
    - email: {{ acme.email | json }}
    - eab_kid: {{ acme.eab_kid | json }}
    - eab_hmac_key_pillar: projects:{{ name }}:tls:acme:eab_hmac_key
    - deploy_hook: {{ tls.acme.hook }}
    - served: {{ tls.dir }}/{{ name }}.crt
{%- if tls.server == 'nginx' %}
    - webroot: {{ tls.acme.webroot }}
{%- else %}
    - listener_port: {{ tls.acme.listener_port }}
{%- endif %}
    - require:
      - pkg: tls-acme-packages-installed
      - file: tls-acme-webroot-present
      - file: tls-acme-hook-managed
      - service: {{ tls.server }}-service-running
{%- endfor %}
{%- endif %}
