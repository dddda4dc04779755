"""RQ's command line with Django set up: what salt-django runs as a project's RQ workers.

``rq worker`` and ``rq cron`` import the project's job functions but, unlike
Celery's Django integration, never call ``django.setup()``: a job that
touches a model would fail with AppRegistryNotReady. Run as
``python -m salt_django_worker worker -w salt_django_worker.Worker <queues>``
or ``... cron <module>``; the Redis URL comes from ``RQ_REDIS_URL`` and the
key prefix from ``RQ_KEY_PREFIX`` (both in the project's env file), never
from the command line, which every user of the server can read.
"""

import os
import signal
import sys

import django
import rq


class Worker(rq.Worker):
    """RQ's worker, whose warm shutdown (TERM: finish the running job, take no
    new one) has a deadline: ``SALT_DJANGO_MAX_TASK_SECONDS``. A job still
    running then is stopped and put back at the front of its queue, to run
    again from the start on the next worker, instead of being failed as
    abandoned once supervisord kills the worker."""

    _past_deadline = False

    def request_stop(self, signum, frame):
        super().request_stop(signum, frame)
        signal.signal(signal.SIGALRM, self._deadline)
        signal.alarm(int(os.environ.get("SALT_DJANGO_MAX_TASK_SECONDS", "300")))

    def _deadline(self, signum, frame):
        if self.horse_pid:
            self._past_deadline = True
            self.log.warning("Worker %s: its job is still running at the stop deadline: stopped, to be requeued", self.name)
            self.kill_horse()

    def handle_job_failure(self, job, queue, *args, **kwargs):
        super().handle_job_failure(job, queue, *args, **kwargs)
        if self._past_deadline:
            job.requeue(at_front=True)
            self.log.warning("Worker %s: job %s requeued", self.name, job.id)


if __name__ == "__main__":
    django.setup()
    from rq.cli import main

    sys.argv = ["rq", *sys.argv[1:]]
    sys.exit(main())
