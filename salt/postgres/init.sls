{%- from 'postgres/map.jinja' import postgres with context %}
{%- from 'app/map.jinja' import projects with context %}

postgres-packages-installed:
  pkg.installed:
    - pkgs: {{ postgres.packages | json }}

# Debian's postgresql.conf includes conf.d/: our settings stay in one file of
# our own and survive package upgrades.
postgres-listen-configured:
  file.managed:
    - name: {{ postgres.conf_dir }}/conf.d/50-salt-django.conf
    - contents: |
        # Managed by salt-django.
        listen_addresses = '{{ postgres.listen_addresses }}'
        port = {{ postgres.port }}
        password_encryption = scram-sha-256
    - user: postgres
    - group: postgres
    - mode: '0644'
    - require:
      - pkg: postgres-packages-installed

# Who may connect over the network: the app and worker servers of a
# cluster (Salt mine), to their project's database only, with a password.
# Debian's own lines (local socket, loopback) stay above ours.
postgres-clients-allowed:
  file.blockreplace:
    - name: {{ postgres.conf_dir }}/pg_hba.conf
    - marker_start: '# BEGIN salt-django clients (managed, do not edit)'
    - marker_end: '# END salt-django clients'
    - content: |
{%- for name, project in projects.items() %}
{%- for minion, address in postgres.clients | dictsort %}
        host {{ project.database.name }} {{ project.database.user }} {{ address }}/32 scram-sha-256 # {{ minion }}
{%- else %}
        # {{ name }}: no app server over the network (single server)
{%- endfor %}
{%- endfor %}
    - append_if_not_found: True
    - require:
      - pkg: postgres-packages-installed

postgres-service-running:
  service.running:
    - name: {{ postgres.service }}
    - enable: True
    - watch:
      - file: postgres-listen-configured

# pg_hba.conf needs a reload, not a restart.
postgres-clients-reloaded:
  cmd.run:
    - name: pg_ctlcluster {{ postgres.version }} main reload
    - onchanges:
      - file: postgres-clients-allowed
    - require:
      - service: postgres-service-running

{%- for name, project in projects.items() %}

# The password is looked up by pillar key inside the state, so that it
# never enters the compiled SLS data that Salt caches.
postgres-{{ name }}-role-present:
  django_db.role_present:
    - name: {{ project.database.user }}
    - project: {{ name }}
    - require:
      - service: postgres-service-running

postgres-{{ name }}-database-present:
  django_db.database_present:
    - name: {{ project.database.name }}
    - owner: {{ project.database.user }}
    - require:
      - django_db: postgres-{{ name }}-role-present
{%- endfor %}
