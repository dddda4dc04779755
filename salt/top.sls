# Which components a minion gets follows from its roles, which pillar assigns
# by minion id (see pillar/topology.sls): a minion cannot claim a role itself.
base:
  '*':
    - common
    # What each server opens follows from its roles (salt/firewall).
    - firewall
    - host
  'I@salt_django:roles:db':
    - match: compound
    - postgres
    - schedule
  'I@salt_django:roles:cache':
    - match: compound
    - redis
  'I@salt_django:roles:storage':
    - match: compound
    - storage
  'I@salt_django:roles:app':
    - match: compound
    - supervisor
    - app
    - schedule
  # Queue workers run the project's release too (salt/app, django_workers).
  'I@salt_django:roles:worker':
    - match: compound
    - supervisor
    - app
  'I@salt_django:roles:web':
    - match: compound
    - nginx
  'I@salt_django:roles:lb':
    - match: compound
    - haproxy
