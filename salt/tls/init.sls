{%- from 'tls/map.jinja' import tls with context %}
{%- from 'app/map.jinja' import projects with context %}

# One key and certificate per project, for whatever ends TLS on this server
# (Nginx on a single server, HAProxy on a load balancer).
tls-directory-present:
  file.directory:
    - name: {{ tls.dir }}
    - user: root
    - group: root
    - mode: '0700'

{%- for name, project in projects.items() %}
{%- set key = tls.dir ~ '/' ~ name ~ '.key' %}
{%- set crt = tls.dir ~ '/' ~ name ~ '.crt' %}
{%- if project.tls.certificate %}

tls-{{ name }}-key-managed:
  file.managed:
    - name: {{ key }}
    - contents_pillar: projects:{{ name }}:tls:private_key
    - mode: '0600'
    - show_changes: False
    - require:
      - file: tls-directory-present

tls-{{ name }}-certificate-managed:
  file.managed:
    - name: {{ crt }}
    - contents_pillar: projects:{{ name }}:tls:certificate
    - mode: '0644'
    - require:
      - file: tls-directory-present
{%- else %}
{%- set acme = project.tls.acme.directory and tls.server %}

tls-{{ name }}-key-managed:
  x509.private_key_managed:
    - name: {{ key }}
    - algo: ec
    - keysize: 256
    - mode: '0600'
{%- if acme %}
    # certbot's deploy hook replaces it (salt/tls/acme.sls).
    - unless: test -s {{ key }}
{%- endif %}
    - require:
      - file: tls-directory-present

# Self-signed until the pillar supplies a certificate; with ACME, only until
# the first one is issued (it lets the server start and answer the challenge).
tls-{{ name }}-certificate-managed:
  x509.certificate_managed:
    - name: {{ crt }}
    - signing_private_key: {{ key }}
    - CN: {{ project.primary_domain | json }}
    - subjectAltName: {{ project.domains | map('regex_replace', '^', 'DNS:') | join(', ') }}
    - basicConstraints: critical, CA:false
    - keyUsage: critical, digitalSignature, keyEncipherment
    - extendedKeyUsage: serverAuth
    - days_valid: {{ tls.days_valid }}
    - days_remaining: {{ tls.days_remaining }}
    - mode: '0644'
{%- if acme %}
    - unless: test -s {{ crt }}
{%- endif %}
    - require:
      - x509: tls-{{ name }}-key-managed
{%- endif %}
{%- endfor %}

