# pillar_roots: this folder, then /etc/salt-django/pillar (created by
# `make deploy`, mode 0700), which holds the host's secrets (local.sls, the
# operator's; generated.sls, passwords make deploy generated) and never
# enters the repository. On a cluster's master, releases.sls is what
# the cluster serves, written by its rollouts (_runners/rollout.py).
base:
  '*':
    - projects
    - topology
  '.*':
    - match: pcre
    - generated
    - local
    - releases
    - ignore_missing: True
