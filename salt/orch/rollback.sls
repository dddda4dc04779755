# salt-run state.orchestrate orch.rollback
#
# Every app server back to the release before the last rollout (after a
# failed rollout: to the release the cluster served before it), batch by
# batch, out of HAProxy's rotation while it switches.
salt-django-release-rolled-back:
  salt.runner:
    - name: rollout.rollback
    - project: {{ salt['pillar.get']('project') | json }}
