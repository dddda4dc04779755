# salt/minion/<id>/start: a server (re)started. orch.join converges it and,
# for an app server, lets HAProxy route to it.
salt-django-server-joins:
  runner.state.orchestrate:
    - args:
      - mods: orch.join
      - pillar:
          minion: {{ data['id'] | json }}
