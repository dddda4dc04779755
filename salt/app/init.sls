{%- from 'app/map.jinja' import app, projects with context %}
{%- from 'supervisor/map.jinja' import supervisor with context %}

include:
  - supervisor

app-packages-installed:
  pkg.installed:
    - pkgs: {{ (app.packages + app.build_packages) | json }}

# Installers, setup.py and build hooks run as this user, never as root.
app-build-user-present:
  user.present:
    - name: {{ app.build_user }}
    - system: True
    - home: {{ app.build_home }}
    - createhome: False
    - shell: /usr/sbin/nologin
    - usergroup: True

# Its caches (uv, pip); nothing it writes outlives a build elsewhere.
app-build-cache-present:
  file.directory:
    - name: {{ app.build_home }}
    - user: {{ app.build_user }}
    - group: {{ app.build_user }}
    - mode: '0700'
    - makedirs: True
    - require:
      - user: app-build-user-present
{%- if app.installer == 'uv' %}

# uv, pinned, in a virtualenv of the server's own Python (pip options from
# salt_django:pip, so that an air-gapped server installs it too).
{%- set pip_options = salt['django_build.pip_args'](app.pip) | map('quote') | join(' ') %}
app-uv-installed:
  cmd.run:
    - name: {{ app.tools_dir }}/bin/pip install --quiet --disable-pip-version-check {{ pip_options }} uv=={{ app.uv_version }}
    - unless: test "$({{ app.tools_dir }}/bin/uv --version 2>/dev/null | cut -d' ' -f2)" = {{ app.uv_version | string | quote }}
    - require:
      - cmd: app-tools-venv-present

app-tools-venv-present:
  cmd.run:
    - name: /usr/bin/python3 -m venv {{ app.tools_dir }}
    - creates: {{ app.tools_dir }}/bin/pip
    - require:
      - pkg: app-packages-installed
{%- endif %}
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

{%- if project.runs.beat %}

# Celery beat's schedule (when each periodic task last ran): kept across
# releases, so that a rollout neither skips nor repeats a run.
app-{{ name }}-beat-directory-present:
  file.directory:
    - name: {{ project.root }}/shared/beat
    - user: {{ project.user }}
    - group: {{ project.user }}
    - mode: '0700'
    - require:
      - file: app-{{ name }}-directories-present
      - user: app-{{ name }}-user-present
    - require_in:
      - django_release: app-{{ name }}-release-deployed
{%- endif %}

# Nginx (www-data) reaches the app server's sockets here and nobody else does.
app-{{ name }}-socket-directory-present:
  file.directory:
    - name: {{ project.run_dir }}
    - user: {{ project.user }}
    - group: www-data
    - mode: '0750'
    - require:
      - file: app-{{ name }}-directories-present
      - user: app-{{ name }}-user-present

# supervisord (root) writes the app server's output here; the app may read it.
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
        SALT_DJANGO_WSGI: {{ project.wsgi }}
        SALT_DJANGO_ASGI: {{ project.asgi }}
        DJANGO_ALLOWED_HOSTS: {{ project.domains | join(',') }}
        DJANGO_HSTS_SECONDS: {{ project.hsts_seconds | string | json }}
        DJANGO_HSTS_PRELOAD: {{ ('1' if project.hsts_preload else '0') | json }}
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
{%- if project.workers.enabled %}
        SALT_DJANGO_WORKERS: {{ project.workers.kind }}
        SALT_DJANGO_QUEUES: {{ project.workers.queues | join(',') | json }}
        SALT_DJANGO_MAX_TASK_SECONDS: {{ project.workers.max_task_seconds | string | json }}
{%- if project.workers.kind == 'rq' %}
        {#- RQ reads it at import: every key and channel of RQ under the project's ACL pattern. #}
        RQ_KEY_PREFIX: {{ name }}:rq
{%- endif %}
{%- endif %}
{%- if project.health.path %}
        SALT_DJANGO_PROJECT_HEALTH: {{ project.health.path | json }}
{%- endif %}
{#- Uploads on S3 (the settings wrapper's Media section); the keys are secrets:S3_ACCESS_KEY/S3_SECRET_KEY. #}
{%- if project.media.backend == 's3' %}
        DJANGO_MEDIA_BACKEND: s3
        DJANGO_MEDIA_S3_ENDPOINT: {{ project.media.endpoint | json }}
        DJANGO_MEDIA_S3_BUCKET: {{ project.media.bucket | json }}
        DJANGO_MEDIA_S3_REGION: {{ project.media.region | json }}
{%- endif %}
{%- if project.email.host %}
        DJANGO_EMAIL_HOST: {{ project.email.host | json }}
        DJANGO_EMAIL_PORT: {{ project.email.port | string | json }}
        DJANGO_EMAIL_USER: {{ project.email.user | string | json }}
        DJANGO_EMAIL_USE_TLS: {{ project.email.use_tls | string | lower | json }}
        DJANGO_EMAIL_FROM: {{ (project.email['from'] or '') | json }}
{%- endif %}
{%- for key, value in project.env.items() %}
        {{ key }}: {{ value | string | json }}
{%- endfor %}
    {#- Names only: the state looks the values up in pillar. #}
    - secrets: {{ salt['saltdjango.secret_variables'](name) | json }}
    - generate:
      - DJANGO_SECRET_KEY
    - require:
      - file: app-{{ name }}-conf-directory-present

# The settings wrapper, the WSGI and ASGI entry points that serve /healthz, and with
# media on S3 the storage class the wrapper names.
app-{{ name }}-settings-managed:
  file.managed:
    - names:
      - {{ project.root }}/shared/conf/salt_django_settings.py:
        - source: salt://app/files/salt_django_settings.py
      - {{ project.root }}/shared/conf/salt_django_wsgi.py:
        - source: salt://app/files/salt_django_wsgi.py
      - {{ project.root }}/shared/conf/salt_django_asgi.py:
        - source: salt://app/files/salt_django_asgi.py
      - {{ project.root }}/shared/conf/salt_django_worker.py:
        - source: salt://app/files/salt_django_worker.py
{%- if project.app_server.kind == 'mod_wsgi' %}
      - {{ project.root }}/shared/conf/salt_django_mod_wsgi.py:
        - source: salt://app/files/salt_django_mod_wsgi.py
{%- endif %}
{%- if project.media.backend == 's3' %}
      - {{ project.root }}/shared/conf/salt_django_storage.py:
        - source: salt://app/files/salt_django_storage.py
{%- endif %}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: app-{{ name }}-directories-present

app-{{ name }}-runner-managed:
  file.managed:
    - names:
      - {{ project.root }}/bin/app-run:
        - source: salt://app/files/app-run.jinja
      - {{ project.root }}/bin/worker-run:
        - source: salt://app/files/worker-run.jinja
{%- if project.app_server.kind == 'mod_wsgi' %}
      - {{ project.root }}/shared/conf/mod_wsgi.conf:
        - source: salt://app/files/mod_wsgi.conf.jinja
        - mode: '0644'
{%- endif %}
    - template: jinja
    - context:
        project: {{ project | json }}
    - mode: '0755'
    - require:
      - file: app-{{ name }}-directories-present

{%- if project.runs.web and project.app_server.debian %}

# What the project's kind of app server runs with (app_servers:<kind>:debian).
app-{{ name }}-app-server-packages-installed:
  pkg.installed:
    - pkgs: {{ project.app_server.debian | json }}
    - require_in:
      - django_release: app-{{ name }}-release-deployed
{%- endif %}

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

app-{{ name }}-programs-configured:
  file.managed:
    - name: {{ supervisor.conf_dir }}/{{ name }}.conf
    - source: salt://app/files/supervisor-program.conf.jinja
    - template: jinja
    - context:
        project: {{ project | json }}
    - mode: '0644'
    - require:
      - pkg: supervisor-packages-installed

# A server set up by an older salt-django serves from a slot of its names
# until this apply's switch: Nginx's new configuration must reach it.
app-{{ name }}-serving-socket-adopted:
  django_release.socket_adopted:
    - name: {{ name }}

# Loads new or changed program definitions, and drops those of this project
# that are gone; supervisord restarts a program whose definition changed
# (rare: command lines live in app-run and worker-run). An older
# salt-django's slot keeps serving: the switch removes it (app_slots).
app-{{ name }}-programs-loaded:
  django_release.programs_loaded:
    - name: {{ name }}
    - conf: {{ supervisor.conf_dir }}/{{ name }}.conf
    - require:
      - service: supervisor-service-running
      - django_release: app-{{ name }}-serving-socket-adopted
    - onchanges:
      - file: app-{{ name }}-programs-configured

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
    - cluster: {{ salt['saltdjango.topology']() | length > 0 }}
    - require:
      - file: app-build-cache-present
{%- if app.installer == 'uv' %}
      - cmd: app-uv-installed
{%- endif %}
      - file: app-{{ name }}-media-directory-present
      - file: app-{{ name }}-socket-directory-present
      - file: app-{{ name }}-log-directory-present
      - file: app-{{ name }}-manage-command-managed
      - django_release: app-{{ name }}-programs-loaded
      - django_backends: app-{{ name }}-backends-reachable
    - watch:
      - django_env: app-{{ name }}-env-managed
      - file: app-{{ name }}-settings-managed
      - file: app-{{ name }}-runner-managed
{%- endfor %}

{#- Projects that left pillar: their programs stop, their data stays. #}
{%- for name, conf in salt['django_removed.removed'](supervisor.conf_dir).items() %}

app-{{ name }}-programs-absent:
  file.absent:
    - name: {{ conf }}

# Stops and drops this project's programs only: a bare `supervisorctl
# update` would also stop another project's older-named slot that serves
# until its switch later in this apply.
app-{{ name }}-programs-unloaded:
  django_release.programs_loaded:
    - name: {{ name }}
    - conf: {{ conf }}
    - require:
      - service: supervisor-service-running
    - onchanges:
      - file: app-{{ name }}-programs-absent

# Reported as a change, once (the next apply finds nothing left): the
# operator learns what stays.
app-{{ name }}-data-kept:
  test.configurable_test_state:
    - changes: True
    - result: True
    - comment: >-
        {{ name }} left pillar: its programs, site and jobs are removed;
        its releases and media, its database and its backups are kept
    - require:
      - django_release: app-{{ name }}-programs-unloaded
{%- endfor %}
