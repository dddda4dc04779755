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

# Who may connect: Debian's local defaults, plus, in a cluster, the app and
# worker servers (Salt mine), each to its project's database only, with a
# password. Nobody else reaches PostgreSQL over the network.
postgres-clients-allowed:
  file.managed:
    - name: {{ postgres.conf_dir }}/pg_hba.conf
    - source: salt://postgres/files/pg_hba.conf.jinja
    - template: jinja
    - context:
        projects: {{ projects | json }}
        clients: {{ postgres.clients | json }}
    - user: postgres
    - group: postgres
    - mode: '0640'
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

# PostgreSQL lets every role (PUBLIC) connect to a new database.
postgres-{{ name }}-database-private:
  django_db.database_private:
    - name: {{ project.database.name }}
    - require:
      - django_db: postgres-{{ name }}-database-present
{%- endfor %}
