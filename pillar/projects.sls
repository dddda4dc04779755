# The projects this deployment serves, keyed by name. Secrets are NOT here:
# they live in /etc/salt-django/pillar/local.sls on the host (see
# pillar.example for every key).
projects:
  demo:
    domains:
      - demo.localhost
    source: salt://projects/demo
    # Background jobs: Celery workers beside Gunicorn (on a cluster's worker servers).
    workers:
      kind: celery
      app: demo.celery:app
