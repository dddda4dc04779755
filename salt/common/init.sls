{%- from 'common/map.jinja' import common with context %}

# failhard: a pillar that fails validation stops the run before anything
# else is changed on this host.
salt-django-pillar-validated:
  saltdjango.validated:
    - failhard: True

# Not failhard: a server whose published address is refused is left out of
# every configuration, and the rest of this run goes on without it.
salt-django-peers-trusted:
  saltdjango.peers_trusted:
    - require:
      - saltdjango: salt-django-pillar-validated

common-apt-lock-timeout-configured:
  file.managed:
    - name: /etc/apt/apt.conf.d/80salt-django-lock-timeout
    - contents: 'DPkg::Lock::Timeout "{{ common.apt_lock_timeout }}";'
    - mode: '0644'

common-packages-installed:
  pkg.installed:
    - pkgs: {{ common.packages | json }}
    - require:
      - file: common-apt-lock-timeout-configured

# The mark a join looks for (_runners/rollout.py: join): a start event, which
# any minion can forge, converges only a server without it.
common-converged-marked:
  file.managed:
    - name: {{ common.converged_mark }}
    - contents: This server was converged by salt-django.
    - makedirs: True
    - mode: '0644'
