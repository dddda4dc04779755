{%- from 'firewall/map.jinja' import firewall with context %}
{%- if firewall.enabled %}

firewall-packages-installed:
  pkg.installed:
    - pkgs:
      - {{ firewall.package }}

# Checked by nft -c, then applied as one transaction: the previous ruleset
# stays live if the new one is refused. Reapplied if the table went missing.
firewall-rules-applied:
  salt_django_firewall.applied:
    - name: {{ firewall.rules }}
    - source: salt://firewall/files/salt-django.nft.jinja
    - table: {{ firewall.table }}
    - context:
        firewall: {{ firewall | json }}
    - require:
      - pkg: firewall-packages-installed

# At boot, Debian's nftables service loads its configuration: ours with it.
firewall-boot-config-includes-rules:
  file.append:
    - name: {{ firewall.boot_config }}
    - text: include "{{ firewall.rules }}"
    - require:
      - salt_django_firewall: firewall-rules-applied
{%- if salt['file.directory_exists']('/run/systemd/system') %}

firewall-service-enabled:
  service.enabled:
    - name: {{ firewall.service }}
    - require:
      - file: firewall-boot-config-includes-rules
{%- endif %}
{%- else %}

firewall-rules-absent:
  salt_django_firewall.absent:
    - name: {{ firewall.rules }}
    - table: {{ firewall.table }}

firewall-boot-config-excludes-rules:
  file.line:
    - name: {{ firewall.boot_config }}
    - content: include "{{ firewall.rules }}"
    - mode: delete
    - onlyif: test -f {{ firewall.boot_config }}
{%- endif %}
