{%- from 'host/map.jinja' import host with context %}
{%- from 'app/map.jinja' import projects with context %}

host-packages-installed:
  pkg.installed:
    - pkgs:
      - {{ host.packages.unattended_upgrades }}
      - {{ host.packages.logrotate }}
{%- if not host.time_daemon %}
      - {{ host.packages.timesyncd }}
{%- endif %}

# On (or off) by pillar; test hosts mask apt's timers, so it never runs there.
host-unattended-upgrades-configured:
  file.managed:
    - name: /etc/apt/apt.conf.d/20auto-upgrades
    - source: salt://host/files/20auto-upgrades.jinja
    - template: jinja
    - context:
        host: {{ host | json }}
    - mode: '0644'
    - require:
      - pkg: host-packages-installed

host-logrotate-managed:
  file.managed:
    - name: /etc/logrotate.d/salt-django
    - source: salt://host/files/logrotate.conf.jinja
    - template: jinja
    - context:
        host: {{ host | json }}
        projects: {{ projects | list | json }}
    - mode: '0644'
    - check_cmd: /usr/sbin/logrotate -d
    - require:
      - pkg: host-packages-installed
{%- if not host.time_daemon %}

host-timesyncd-configured:
  file.managed:
    - name: /etc/systemd/timesyncd.conf.d/salt-django.conf
    - source: salt://host/files/timesyncd.conf.jinja
    - template: jinja
    - context:
        host: {{ host | json }}
    - makedirs: True
    - mode: '0644'
    - require:
      - pkg: host-packages-installed
{%- if host.systemd %}

# Enabled, not started here: in a container (the test hosts) the machine
# keeps the time and timesyncd's own condition skips it.
host-timesyncd-enabled:
  service.enabled:
    - name: systemd-timesyncd
    - require:
      - file: host-timesyncd-configured
{%- endif %}
{%- endif %}
{%- if host.sshd %}
{%- if host.ssh_hardening %}

host-sshd-hardened:
  file.managed:
    - name: /etc/ssh/sshd_config.d/50-salt-django.conf
    - source: salt://host/files/sshd-hardening.conf.jinja
    - mode: '0644'
{%- else %}

host-sshd-hardening-absent:
  file.absent:
    - name: /etc/ssh/sshd_config.d/50-salt-django.conf
{%- endif %}

# sshd checks its whole configuration before it reloads: a bad one never
# replaces the running daemon's.
host-sshd-config-tested:
  cmd.run:
    - name: /usr/sbin/sshd -t
    - onchanges:
      - file: host-sshd-{{ 'hardened' if host.ssh_hardening else 'hardening-absent' }}

host-sshd-reloaded:
  cmd.run:
    - name: /usr/sbin/service ssh reload
    # A server that does not run sshd is left without it.
    - onlyif: /usr/sbin/service ssh status
    - onchanges:
      - cmd: host-sshd-config-tested
{%- endif %}
