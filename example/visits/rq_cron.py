"""RQ's periodic jobs of the demo (``rq cron``; pillar ``workers: {kind: rq, cron: visits.rq_cron}``)."""

from rq import cron

from .tasks import tick

cron.register(tick, queue_name="default", cron="* * * * *")
