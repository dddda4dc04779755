"""Production settings, applied over the project's own settings by salt-django.

The project's settings module (``SALT_DJANGO_BASE_SETTINGS``) is imported
as it is; this module then sets the hardened production values, all read
from the environment that salt-django writes to ``/etc/<project>/env``.
Nothing here is specific to one host: the same file serves every server.
"""

import importlib
import os

from django.core.exceptions import ImproperlyConfigured


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ImproperlyConfigured(f"environment variable {name} is not set (see /etc/<project>/env)")
    return value


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in _env(name).split(",") if item.strip()]


_base = importlib.import_module(_env("SALT_DJANGO_BASE_SETTINGS"))
globals().update({key: value for key, value in vars(_base).items() if key.isupper()})

DEBUG = False
SECRET_KEY = _env("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = [f"https://{host}" for host in ALLOWED_HOSTS]

# TLS ends at Nginx (or HAProxy); it tells Django with X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = True
# Load balancers probe app servers over plain HTTP by IP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = os.environ.get("DJANGO_HSTS_PRELOAD", "1") == "1"
if not SECURE_HSTS_PRELOAD:
    # Left out on purpose (pillar hsts_preload: false): check --deploy's W021 is answered.
    SILENCED_SYSTEM_CHECKS = [*globals().get("SILENCED_SYSTEM_CHECKS", []), "security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _env("DATABASE_NAME"),
        "USER": _env("DATABASE_USER"),
        "PASSWORD": _env("DATABASE_PASSWORD"),
        "HOST": _env("DATABASE_HOST"),
        "PORT": os.environ.get("DATABASE_PORT", "5432"),
        "CONN_MAX_AGE": int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        "CONN_HEALTH_CHECKS": True,
    }
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://{_env('REDIS_HOST')}:{os.environ.get('REDIS_PORT', '6379')}/{os.environ.get('REDIS_DB', '0')}",
        "KEY_PREFIX": os.environ.get("DJANGO_CACHE_PREFIX", ""),
        "OPTIONS": {"username": _env("REDIS_USER"), "password": _env("REDIS_PASSWORD")},
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cache"

# Each release collects its own static files, so that the old release keeps
# serving its own until the switch.
_release_dir = os.environ.get("SALT_DJANGO_RELEASE_DIR", os.getcwd())
STATIC_ROOT = os.path.join(_release_dir, "static")
MEDIA_ROOT = _env("DJANGO_MEDIA_ROOT")
_storages = dict(getattr(_base, "STORAGES", {}) or {})
_storages.setdefault("default", {"BACKEND": "django.core.files.storage.FileSystemStorage"})
# Hashed names let Nginx cache static files for a year.
_storages.setdefault("staticfiles", {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"})
STORAGES = _storages

# Background workers (pillar `workers:`): the broker is the project's Redis,
# as its ACL user, and every key and channel under `<project>:`, the only
# ones that user may touch (a DB index is no isolation: ACL patterns apply in
# every DB). A job is acknowledged once it has run, so that a worker stopped
# or killed mid-job hands it back instead of losing it; it stays invisible to
# other workers for longer than it may run, so that none runs it twice.
_workers = os.environ.get("SALT_DJANGO_WORKERS")
if _workers:
    _prefix = _env("DJANGO_CACHE_PREFIX") + ":"
    _max_task = int(_env("SALT_DJANGO_MAX_TASK_SECONDS"))
    _queues = _env_list("SALT_DJANGO_QUEUES")
if _workers == "celery":
    CELERY_BROKER_URL = _env("CELERY_BROKER_URL")
    # A project with a result backend of its own (django-celery-results...) keeps it.
    if str(globals().get("CELERY_RESULT_BACKEND") or "redis").startswith("redis"):
        CELERY_RESULT_BACKEND = _env("CELERY_RESULT_BACKEND")
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **globals().get("CELERY_BROKER_TRANSPORT_OPTIONS", {}),
        "global_keyprefix": _prefix,
        "visibility_timeout": _max_task + 30,
        # A killed job's message comes back within ~10 s of its visibility
        # timeout, instead of kombu's default sweep of every ~100 s.
        "unacked_restore_throttle": 1,
    }
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {**globals().get("CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS", {}), "global_keyprefix": _prefix}
    CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
    CELERY_TASK_ACKS_LATE = True
    CELERY_TASK_REJECT_ON_WORKER_LOST = True
    CELERY_WORKER_PREFETCH_MULTIPLIER = 1
    # A stopping worker is killed max_task_seconds (+5) after TERM: a job
    # still running then comes back once its visibility timeout passed. On a
    # worker that keeps running, a job is killed before that timeout, so that
    # it never runs twice at once.
    CELERY_TASK_TIME_LIMIT = min(int(globals().get("CELERY_TASK_TIME_LIMIT") or _max_task + 15), _max_task + 15)
    CELERY_TASK_DEFAULT_QUEUE = globals().get("CELERY_TASK_DEFAULT_QUEUE", _queues[0])
    # Remote control (celery inspect/control) listens with PSUBSCRIBE, which a
    # Redis ACL allows only for a pattern it lists literally, never under
    # `<project>:*`: the worker would stop at its first subscription.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
elif _workers == "rq":
    # django-rq's setting; RQ itself takes its key prefix from RQ_KEY_PREFIX.
    RQ_QUEUES = {name: {"URL": _env("RQ_REDIS_URL"), "DEFAULT_TIMEOUT": _max_task} for name in _queues}

# --- Media (uploads): pillar projects:<p>:media, env from salt/app/init.sls ---
# local (no DJANGO_MEDIA_BACKEND): MEDIA_ROOT above, on this app server.
# s3: the project's private bucket, on the cluster's storage server or an
# external endpoint, with the project's own keys. Nginx serves /media/ by
# proxying the bucket, so file URLs stay MEDIA_URL + name (salt_django_storage).
# The operator chose s3 in pillar: it replaces the project's default storage.
if os.environ.get("DJANGO_MEDIA_BACKEND", "local") == "s3":
    MEDIA_URL = "/media/"
    STORAGES["default"] = {
        "BACKEND": "salt_django_storage.MediaStorage",
        "OPTIONS": {
            "bucket_name": _env("DJANGO_MEDIA_S3_BUCKET"),
            "endpoint_url": _env("DJANGO_MEDIA_S3_ENDPOINT"),
            "region_name": _env("DJANGO_MEDIA_S3_REGION"),
            "access_key": _env("S3_ACCESS_KEY"),
            "secret_key": _env("S3_SECRET_KEY"),
            # Path-style (endpoint/bucket/name): no wildcard DNS for bucket hosts.
            "addressing_style": "path",
            "signature_version": "s3v4",
            # Private objects, plain URLs (served through Nginx), never overwritten.
            "default_acl": None,
            "querystring_auth": False,
            "file_overwrite": False,
        },
    }

# SMTP from pillar `email:` (password: secrets:EMAIL_HOST_PASSWORD).
_SMTP = "django.core.mail.backends.smtp.EmailBackend"
_DEVELOPMENT_MAIL = {f"django.core.mail.backends.{kind}.EmailBackend" for kind in ("console", "dummy", "filebased", "locmem")}
_smtp_options = {
    "host": os.environ.get("DJANGO_EMAIL_HOST", ""),
    "port": int(os.environ.get("DJANGO_EMAIL_PORT", "587")),
    "username": os.environ.get("DJANGO_EMAIL_USER", ""),
    "password": os.environ.get("EMAIL_HOST_PASSWORD", ""),
    "use_tls": os.environ.get("DJANGO_EMAIL_USE_TLS", "true") == "true",
}
if "MAILERS" in globals():
    # Django 6.1+ (MAILERS replaces EMAIL_*). startproject's console backend
    # would write mail, password-reset links included, into the app's log:
    # production sends over SMTP, to localhost as Django always did unless
    # pillar names a server.
    _mailer = dict(MAILERS.get("default") or {})  # noqa: F821 - the project's, copied above
    if _smtp_options["host"]:
        _mailer = {"BACKEND": _SMTP, "OPTIONS": _smtp_options}
    elif _mailer.get("BACKEND") in _DEVELOPMENT_MAIL:
        _mailer = {"BACKEND": _SMTP}
    MAILERS = {**MAILERS, "default": _mailer}  # noqa: F821
elif _smtp_options["host"]:
    EMAIL_BACKEND = _SMTP
    EMAIL_HOST = _smtp_options["host"]
    EMAIL_PORT = _smtp_options["port"]
    EMAIL_HOST_USER = _smtp_options["username"]
    EMAIL_HOST_PASSWORD = _smtp_options["password"]
    EMAIL_USE_TLS = _smtp_options["use_tls"]
if os.environ.get("DJANGO_EMAIL_FROM"):
    DEFAULT_FROM_EMAIL = SERVER_EMAIL = os.environ["DJANGO_EMAIL_FROM"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}
