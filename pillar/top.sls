# pillar_roots: this folder, then /etc/salt-django/pillar (created by
# `make deploy`, mode 0700), which holds the host's secrets (local.sls) and
# never enters the repository.
base:
  '*':
    - projects
    - topology
  '.*':
    - match: pcre
    - local
    - ignore_missing: True
