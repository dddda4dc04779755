# salt-django/deploy: a rollout requested with `salt-run rollout.request`
# (on the master, or by CI through salt-api), which signs the event with the
# master's key. Any minion can put any data under this tag, so the runner
# checks the signature and refuses anything else (rollout.requested).
salt-django-release-requested:
  runner.rollout.requested:
    - args:
      - request: {{ data | json }}
