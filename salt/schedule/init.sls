{%- from 'schedule/map.jinja' import schedule with context %}
{%- if schedule.backend == 'cron' and schedule.jobs %}

schedule-cron-installed:
  pkg.installed:
    - name: {{ schedule.cron_package }}

schedule-cron-running:
  service.running:
    - name: {{ schedule.cron_service }}
    - enable: True
    - require:
      - pkg: schedule-cron-installed
{%- endif %}
{%- for job in schedule.jobs %}

schedule-{{ job.id }}-script-managed:
  file.managed:
    - name: {{ job.script }}
    - source: salt://schedule/files/job.sh.jinja
    - template: jinja
    - context:
        job: {{ job | json }}
    - mode: '0755'
    - makedirs: True
{%- if schedule.backend == 'systemd' %}

schedule-{{ job.id }}-units-managed:
  file.managed:
    - names:
      - /etc/systemd/system/{{ job.unit }}.service:
        - source: salt://schedule/files/job.service.jinja
      - /etc/systemd/system/{{ job.unit }}.timer:
        - source: salt://schedule/files/job.timer.jinja
    - template: jinja
    - context:
        job: {{ job | json }}
    - mode: '0644'

schedule-{{ job.id }}-timer-running:
  service.running:
    - name: {{ job.unit }}.timer
    - enable: True
    - require:
      - file: schedule-{{ job.id }}-script-managed
    - watch:
      - file: schedule-{{ job.id }}-units-managed
{%- else %}

schedule-{{ job.id }}-cron-managed:
  file.managed:
    - name: /etc/cron.d/{{ job.unit }}
    - source: salt://schedule/files/job.cron.jinja
    - template: jinja
    - context:
        job: {{ job | json }}
    - mode: '0644'
    - require:
      - file: schedule-{{ job.id }}-script-managed
      - pkg: schedule-cron-installed
    # cron notices a changed file by its mtime in whole seconds: a file it
    # read half-written within the same second would never be read again.
    - watch_in:
      - service: schedule-cron-running
{%- endif %}
{%- endfor %}
{%- for unit, found in schedule.stale.items() %}
{%- if found.timer and schedule.backend == 'systemd' %}

schedule-{{ found.id }}-timer-stopped:
  service.dead:
    - name: {{ unit }}.timer
    - enable: False
{%- endif %}

schedule-{{ found.id }}-files-removed:
  file.absent:
    - names: {{ found.paths | json }}
{%- if found.timer and schedule.backend == 'systemd' %}
    - require:
      - service: schedule-{{ found.id }}-timer-stopped
{%- endif %}
{%- endfor %}
