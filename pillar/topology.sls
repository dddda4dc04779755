# Roles by minion id, from topology.yaml. A minion cannot choose its roles:
# grains are set by the minion itself, pillar by the master (or, masterless,
# by this repository).
# Masterless (`make deploy`, salt-call --local): one server, every role but lb.
{%- import_yaml 'topology.yaml' as topology %}
{%- set masterless = opts.get('__role') == 'minion' %}
{%- set hosts = {} if masterless else topology.get('hosts') or {} %}
{%- set network = topology.get('private_network') %}
topology:
  hosts: {{ hosts | json }}
  private_network: {{ network | json }}
salt_django:
  roles: {{ ((hosts.get(opts['id']) or {}).get('roles', []) if hosts else ['db', 'cache', 'app', 'web']) | json }}
{%- if hosts %}
# Every server publishes its private address; the others find it with
# mine.get (see _modules/saltdjango.py: addresses).
mine_functions:
  salt_django_address:
    - mine_function: network.ip_addrs
{%- if network %}
    - cidr: {{ network | json }}
{%- else %}
    - type: private
{%- endif %}
{%- endif %}
