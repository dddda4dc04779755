# Run by the reactor when a minion starts (reactor/minion-start.sls):
# converge the server; an app server also gets the release the cluster
# serves and HAProxy starts routing to it.
salt-django-server-joined:
  salt.runner:
    - name: rollout.join
    - minion: {{ salt['pillar.get']('minion') | json }}
