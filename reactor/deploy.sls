# salt-django/deploy, sent on the master (e.g. by CI through salt-api or
# `salt-run event.send salt-django/deploy '{"release": "v2"}'`): orch.deploy.
# An event a minion sent carries its id and is ignored: a minion must not
# be able to start a rollout.
{%- if 'id' not in data %}
salt-django-release-requested:
  runner.state.orchestrate:
    - args:
      - mods: orch.deploy
      - pillar:
          release: {{ data.get('release') | json }}
          project: {{ data.get('project') | json }}
{%- endif %}
