# salt-run state.orchestrate orch.deploy pillar='{"release": "<git ref or release id>"}'
# (add "allow_partial": true to go on while an app server does not answer)
#
# Rolls the release out to every app server, batch by batch (pillar
# rollout:batch), with no request dropped. The steps run in the rollout
# runner (_runners/rollout.py) under one lock, so that a second rollout is
# refused and the first failure stops everything, naming the server.
salt-django-release-rolled-out:
  salt.runner:
    - name: rollout.deploy
    - release: {{ salt['pillar.get']('release') | json }}
    - project: {{ salt['pillar.get']('project') | json }}
    - allow_partial: {{ salt['pillar.get']('allow_partial') | json }}
