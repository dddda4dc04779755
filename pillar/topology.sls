# Roles by minion id. A minion cannot choose its roles: grains are set by the
# minion itself, pillar by the master (or, masterless, by this repository).
# With no host listed, the one server holds every role but `lb`.
{%- set hosts = {} %}
{%- set single_server = ['db', 'cache', 'app', 'web'] %}
topology:
  hosts: {{ hosts | json }}
salt_django:
  roles: {{ hosts.get(grains['id'], [] if hosts else single_server) | json }}
