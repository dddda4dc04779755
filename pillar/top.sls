# pillar_roots: this folder, then /etc/salt-django/pillar (created by
# `make deploy`, mode 0700), which holds the host's secrets (local.sls, the
# operator's; generated.sls, passwords salt-django generated) and never
# enters the repository. role_secrets reads those two and gives each server
# only what its roles need. On a cluster's master, releases.sls is what the
# cluster serves, written by its rollouts (_runners/rollout.py).
base:
  '*':
    - projects
    - topology
    - role_secrets
  '.*':
    - match: pcre
    - releases
    - ignore_missing: True
