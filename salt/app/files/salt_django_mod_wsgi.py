"""The WSGI script mod_wsgi runs (``app_server: {kind: mod_wsgi}``): the
project's environment first, then ``salt_django_wsgi``.

Apache cannot give a WSGI application environment variables: ``SetEnv``
reaches only each request's WSGI environ, long after Django read its
settings from ``os.environ``. salt-django's runner therefore starts Apache
with no environment but paths (``bin/app-run``), and this script reads the
project's env file (``SALT_DJANGO_ENV_FILE``: ``KEY='value'`` lines, as sh
sources them) into ``os.environ`` before anything imports the project. The
secrets never pass through Apache's own processes.
"""

import os
import shlex


def load_env(path: str) -> None:
    """Set every ``KEY=value`` of the env file ``path`` in ``os.environ``."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, raw = line.split("=", 1)
                os.environ[key] = "".join(shlex.split(raw))


load_env(os.environ["SALT_DJANGO_ENV_FILE"])

from salt_django_wsgi import application  # noqa: E402

__all__ = ["application"]
