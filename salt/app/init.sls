{%- from 'app/map.jinja' import app, projects with context %}
{%- from 'supervisor/map.jinja' import supervisor with context %}

app-packages-installed:
  pkg.installed:
    - pkgs: {{ app.packages | json }}
{%- for name, project in projects.items() %}

app-{{ name }}-user-present:
  user.present:
    - name: {{ project.user }}
    - system: True
    - home: {{ project.root }}
    - createhome: False
    - shell: /usr/sbin/nologin
    - usergroup: True

# Code and virtualenvs belong to root: the app can read its code, not change it.
app-{{ name }}-directories-present:
  file.directory:
    - names:
      - {{ project.root }}
      - {{ project.root }}/releases
      - {{ project.root }}/shared
      - {{ project.root }}/shared/conf
      - {{ project.root }}/bin
    - user: root
    - group: root
    - mode: '0755'

app-{{ name }}-media-directory-present:
  file.directory:
    - name: {{ project.root }}/shared/media
    - user: {{ project.user }}
    - group: www-data
    - mode: '0750'
    - require:
      - file: app-{{ name }}-directories-present
      - user: app-{{ name }}-user-present

# Nginx (www-data) reaches Gunicorn's socket here and nobody else does.
app-{{ name }}-socket-directory-present:
  file.directory:
    - name: {{ project.run_dir }}
    - user: {{ project.user }}
    - group: www-data
    - mode: '0750'
    - require:
      - file: app-{{ name }}-directories-present
      - user: app-{{ name }}-user-present

# supervisord (root) writes Gunicorn's output here; the app may read it.
app-{{ name }}-log-directory-present:
  file.directory:
    - name: {{ project.log_dir }}
    - user: root
    - group: {{ project.user }}
    - mode: '0750'
    - require:
      - user: app-{{ name }}-user-present

app-{{ name }}-conf-directory-present:
  file.directory:
    - name: {{ project.conf_dir }}
    - user: root
    - group: {{ project.user }}
    - mode: '0750'
    - require:
      - user: app-{{ name }}-user-present

app-{{ name }}-env-managed:
  django_env.managed:
    - name: {{ project.env_file }}
    - project: {{ name }}
    - user: root
    - group: {{ project.user }}
    - mode: '0640'
    - env:
        DJANGO_SETTINGS_MODULE: {{ project.settings.module }}
        SALT_DJANGO_BASE_SETTINGS: {{ project.settings.base }}
        PYTHONPATH: {{ project.root }}/shared/conf
        DJANGO_ALLOWED_HOSTS: {{ project.domains | join(',') }}
        DJANGO_HSTS_SECONDS: {{ project.hsts_seconds | string | json }}
        DJANGO_LOG_LEVEL: {{ project.log_level }}
        DJANGO_MEDIA_ROOT: {{ project.root }}/shared/media
        DJANGO_CACHE_PREFIX: {{ name }}
        DATABASE_HOST: {{ project.database.host | json }}
        DATABASE_PORT: {{ project.database.port | string | json }}
        DATABASE_NAME: {{ project.database.name }}
        DATABASE_USER: {{ project.database.user }}
        REDIS_HOST: {{ project.cache.host | json }}
        REDIS_PORT: {{ project.cache.port | string | json }}
        REDIS_DB: {{ project.cache.db | string | json }}
        REDIS_USER: {{ name }}
{%- for key, value in project.env.items() %}
        {{ key }}: {{ value | string | json }}
{%- endfor %}
    - secrets:
        DJANGO_SECRET_KEY: SECRET_KEY
        DATABASE_PASSWORD: DB_PASSWORD
        REDIS_PASSWORD: REDIS_PASSWORD
    - generate:
      - DJANGO_SECRET_KEY
    - require:
      - file: app-{{ name }}-conf-directory-present

app-{{ name }}-settings-managed:
  file.managed:
    - name: {{ project.root }}/shared/conf/salt_django_settings.py
    - source: salt://app/files/salt_django_settings.py
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: app-{{ name }}-directories-present

app-{{ name }}-runner-managed:
  file.managed:
    - name: {{ project.root }}/bin/gunicorn-run
    - source: salt://app/files/gunicorn-run.jinja
    - template: jinja
    - context:
        project: {{ project | json }}
    - mode: '0755'
    - require:
      - file: app-{{ name }}-directories-present

app-{{ name }}-manage-command-managed:
  file.managed:
    - name: {{ project.root }}/bin/manage
    - source: salt://app/files/manage.jinja
    - template: jinja
    - context:
        project: {{ project | json }}
    - mode: '0755'
    - require:
      - file: app-{{ name }}-directories-present

app-{{ name }}-gunicorn-configured:
  file.managed:
    - name: {{ supervisor.conf_dir }}/{{ name }}.conf
    - source: salt://app/files/supervisor-program.conf.jinja
    - template: jinja
    - context:
        project: {{ project | json }}
    - mode: '0644'
    - require:
      - pkg: supervisor-packages-installed

# Loads new or changed program definitions; supervisord restarts a program
# whose definition changed (rare: its command line lives in gunicorn-run).
app-{{ name }}-gunicorn-programs-loaded:
  cmd.run:
    - name: supervisorctl update
    - require:
      - service: supervisor-service-running
    - onchanges:
      - file: app-{{ name }}-gunicorn-configured

# In a cluster the db and cache servers converge at the same time as this one.
app-{{ name }}-backends-reachable:
  django_backends.reachable:
    - name: {{ name }}
    - database: {{ project.database | json }}
    - cache: {{ project.cache | json }}
    - timeout: {{ app.backend_wait }}
    - require:
      - pkg: app-packages-installed

# Builds, gates, migrates and switches with no dropped request; restarts the
# live release the same way when its environment or code runner changes.
app-{{ name }}-release-deployed:
  django_release.deployed:
    - name: {{ name }}
    - source: {{ project.source }}
{#- In a cluster: the release its last rollout switched to (pillar written by the rollout runner). #}
{%- if project.release.repo %}
    - repo: {{ project.release.repo | json }}
    - ref: {{ project.release.ref | json }}
    - release: {{ project.release.id | json }}
{%- endif %}
    - require:
      - file: app-{{ name }}-media-directory-present
      - file: app-{{ name }}-socket-directory-present
      - file: app-{{ name }}-log-directory-present
      - file: app-{{ name }}-manage-command-managed
      - cmd: app-{{ name }}-gunicorn-programs-loaded
      - django_backends: app-{{ name }}-backends-reachable
    - watch:
      - django_env: app-{{ name }}-env-managed
      - file: app-{{ name }}-settings-managed
      - file: app-{{ name }}-runner-managed
{%- endfor %}
