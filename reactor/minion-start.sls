# salt/minion/<id>/start: a server (re)started, or so says an event that any
# minion can forge. rollout.join converges a server only if it never
# converged (or, an app server, serves another release than the cluster),
# at most once per 5 minutes: a reconnect storm converges nobody twice.
salt-django-server-joins:
  runner.rollout.join:
    - args:
      - minion: {{ (tag.split('/') + ['', '', ''])[2] | json }}
