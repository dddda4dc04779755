"""RQ's command line with Django set up: what salt-django runs as a project's RQ workers.

``rq worker`` and ``rq cron`` import the project's job functions but, unlike
Celery's Django integration, never call ``django.setup()``: a job that
touches a model would fail with AppRegistryNotReady. Run as
``python -m salt_django_worker worker <queues>`` or ``... cron <module>``;
the Redis URL comes from ``RQ_REDIS_URL`` and the key prefix from
``RQ_KEY_PREFIX`` (both in the project's env file), never from the command
line, which every user of the server can read.
"""

import sys

import django

if __name__ == "__main__":
    django.setup()
    from rq.cli import main

    sys.argv = ["rq", *sys.argv[1:]]
    sys.exit(main())
