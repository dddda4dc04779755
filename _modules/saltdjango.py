"""The deployment description as Salt sees it: validated, merged with its
defaults, and located (the cluster's addresses from the Salt mine).

Every rule that decides whether a deployment description is usable lives
here, so that the states can refuse bad input before they touch a host and
so that the rules can be unit-tested without a server. The rules of roles,
secrets by role and trusted addresses are ``_utils/saltdjango_topology.py``
(the pillar files need them too); the env file's format is
``_utils/saltdjango_env.py``. Secrets are handled by key name only: no
function here returns or logs a secret value.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import secrets
import shlex
import string
import urllib.parse
from typing import Any

import yaml

__virtualname__ = "saltdjango"

REQUIRED_SECRETS = ("DB_PASSWORD", "REDIS_PASSWORD")
#: Pillar secrets with an env variable of another name; any other secret keeps its name.
SECRET_VARIABLES = {"SECRET_KEY": "DJANGO_SECRET_KEY", "DB_PASSWORD": "DATABASE_PASSWORD", "REDIS_PASSWORD": "REDIS_PASSWORD"}
#: Env variables derived from secrets (URLs with a password in them).
DERIVED_SECRET_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CACHE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "RQ_REDIS_URL")
DEFAULTS_URL = "salt://app/defaults.yaml"
#: The storage component's defaults: the port its S3 proxy listens on, which app servers connect to.
STORAGE_DEFAULTS_URL = "salt://storage/defaults.yaml"
MEDIA_BACKENDS = ("local", "s3")
#: Queue libraries a project's background workers may use (pillar ``workers:kind``).
WORKER_KINDS = ("celery", "rq")
_WORKER_KEYS = frozenset({"kind", "app", "queues", "concurrency", "max_task_seconds", "beat", "cron"})
_PYTHON_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_.]*)?$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
HOOK_STAGES = ("build", "before_switch", "after_switch")
MIN_PASSWORD_LENGTH = 16
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_UNIQUE = 5
SECRET_KEY_INSECURE_PREFIX = "django-insecure-"  # noqa: S105 - a prefix to refuse, not a secret
# Letters and digits only: a generated value never needs quoting anywhere.
_ALPHABET = string.ascii_letters + string.digits
_HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PROJECT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_ENV_KEY = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# S3's bucket naming rules (no dots: path-style addressing and TLS both stay simple).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


def __virtual__() -> str:
    """Pure Python: available everywhere."""
    return __virtualname__


def _topology(function: str) -> Any:
    """A rule of ``_utils/saltdjango_topology.py``: roles, secrets by role, trusted addresses."""
    return __utils__[f"saltdjango_topology.{function}"]  # noqa: F821


def secret_key_problems(value: Any) -> list[str]:
    """Why a SECRET_KEY is weak, by Django's own rule (security.W009); empty if strong.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.secret_key_problems "$(openssl rand -hex 32)"
    """
    if not isinstance(value, str) or not value:
        return ["is empty"]
    problems = []
    if len(value) < SECRET_KEY_MIN_LENGTH:
        problems.append(f"has {len(value)} characters, needs at least {SECRET_KEY_MIN_LENGTH}")
    if len(set(value)) < SECRET_KEY_MIN_UNIQUE:
        problems.append(f"has fewer than {SECRET_KEY_MIN_UNIQUE} unique characters")
    if value.startswith(SECRET_KEY_INSECURE_PREFIX):
        problems.append(f"starts with '{SECRET_KEY_INSECURE_PREFIX}'")
    return problems


def _password_problems(value: Any) -> list[str]:
    """Why a service password is unusable; empty if it is fine."""
    if value is None or value == "":
        return ["is missing"]
    if not isinstance(value, str):
        return ["must be a string"]
    problems = []
    if len(value) < MIN_PASSWORD_LENGTH:
        problems.append(f"has {len(value)} characters, needs at least {MIN_PASSWORD_LENGTH}")
    if any(ch.isspace() for ch in value) or any(ch in value for ch in "'\"\\"):
        problems.append("contains whitespace, quotes or backslashes")
    return problems


def _domain_problems(domain: Any) -> list[str]:
    """Why a domain cannot be served (RFC 1123 host name, lower case, no scheme or port)."""
    if not isinstance(domain, str) or not domain:
        return ["is empty"]
    if domain != domain.lower():
        return ["must be lower case"]
    if len(domain) > 253:
        return ["is longer than 253 characters"]
    labels = domain.split(".")
    if not all(_HOSTNAME_LABEL.match(label) for label in labels):
        return ["is not a valid host name (letters, digits, '-' and '.' only)"]
    return []


def _validate_project(name: str, project: Any, roles: list[str] | None = None) -> list[str]:
    """Errors in one project's pillar, each naming the pillar key it is about.

    ``roles``: this server's; only the secrets they receive (``needs_secret``)
    can be missing. None: a single server's."""
    key = f"projects:{name}"
    if not _PROJECT_NAME.match(str(name)):
        return [f"{key}: project name must match {_PROJECT_NAME.pattern}"]
    if not isinstance(project, dict):
        return [f"{key}: must be a mapping"]
    errors = []
    domains = project.get("domains")
    if not isinstance(domains, list) or not domains:
        errors.append(f"{key}:domains: must list at least one domain")
    else:
        for index, domain in enumerate(domains):
            errors.extend(f"{key}:domains:{index}: {domain!r} {p}" for p in _domain_problems(domain))
    secret_values = project.get("secrets") or {}
    if not isinstance(secret_values, dict):
        return [*errors, f"{key}:secrets: must be a mapping"]
    held = _topology("roles_of")({}, "", True) if roles is None else roles
    for secret in [r for r in REQUIRED_SECRETS if _topology("needs_secret")(held, r)]:
        errors.extend(f"{key}:secrets:{secret} {p}" for p in _password_problems(secret_values.get(secret)))
    secret_key = secret_values.get("SECRET_KEY")
    if secret_key is not None:
        errors.extend(f"{key}:secrets:SECRET_KEY {p}" for p in secret_key_problems(secret_key))
    settings = project.get("settings") or {}
    if isinstance(settings, dict) and settings.get("wrapper") is False and not settings.get("module"):
        errors.append(f"{key}:settings:module: must name the project's production settings when settings:wrapper is false")
    extra_env = project.get("env") or {}
    if not isinstance(extra_env, dict):
        errors.append(f"{key}:env: must be a mapping")
    else:
        errors.extend(f"{key}:env:{k}: not a valid variable name" for k in extra_env if not _ENV_KEY.match(str(k)))
    for secret, value in secret_values.items():
        if not _ENV_KEY.match(str(secret)):
            errors.append(f"{key}:secrets:{secret}: not a valid variable name (A-Z, 0-9, _)")
        elif secret in DERIVED_SECRET_VARIABLES or (secret in SECRET_VARIABLES.values() and secret not in SECRET_VARIABLES):
            errors.append(f"{key}:secrets:{secret}: salt-django sets this variable itself")
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            errors.append(f"{key}:secrets:{secret}: must be a string")
    edge = __utils__["saltdjango_edge.problems"](key, project)  # noqa: F821
    return errors + _build_problems(key, project) + _worker_problems(key, project.get("workers")) + edge


def _worker_queues(workers: dict[str, Any]) -> list[str]:
    """The queues a project's workers consume: ``queues``, for RQ also ``app``
    (the issue's shorthand), else the library's default queue."""
    queues = workers.get("queues") or (workers.get("app") if workers.get("kind") == "rq" else None)
    if isinstance(queues, str):
        queues = [q.strip() for q in queues.split(",") if q.strip()]
    return list(queues) if queues else ["celery" if workers.get("kind", "celery") == "celery" else "default"]


def _worker_problems(key: str, workers: Any) -> list[str]:
    """Errors in a project's ``workers:`` (its background workers); none when it declares none."""
    if workers is None or workers == {}:
        return []
    key = f"{key}:workers"
    if not isinstance(workers, dict):
        return [f"{key}: must be a mapping such as {{kind: celery, app: <project>.celery:app}}"]
    errors = [f"{key}:{k}: unknown key; known: {', '.join(sorted(_WORKER_KEYS))}" for k in sorted(map(str, set(workers) - _WORKER_KEYS))]
    kind = workers.get("kind", "celery")
    if kind not in WORKER_KINDS:
        return [*errors, f"{key}:kind: {kind!r} is not supported; supported: {', '.join(WORKER_KINDS)}"]
    app = workers.get("app")
    if kind == "celery" and not (isinstance(app, str) and _PYTHON_PATH.match(app)):
        errors.append(f"{key}:app: must name the project's Celery application, e.g. {{name}}.celery:app or {{name}}")
    if kind == "celery" and workers.get("cron") is not None:
        errors.append(f"{key}:cron: is RQ's periodic jobs module; Celery's periodic tasks run by beat (workers:beat)")
    if kind == "rq" and workers.get("cron") is not None and not (isinstance(workers["cron"], str) and _PYTHON_PATH.match(workers["cron"])):
        errors.append(f"{key}:cron: must be the dotted path of the module that registers RQ's cron jobs")
    queues = workers.get("queues") or (app if kind == "rq" else None) or []
    if isinstance(queues, str):
        queues = queues.split(",")
    if not isinstance(queues, list) or not all(isinstance(q, str) and _QUEUE_NAME.match(q.strip()) for q in queues):
        errors.append(f"{key}:queues: must list queue names (letters, digits, _ . -)")
    for field, low, high in (("concurrency", 1, 256), ("max_task_seconds", 1, 86400)):
        value = workers.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            errors.append(f"{key}:{field}: must be a whole number from {low} to {high}")
    if not isinstance(workers.get("beat", True), bool):
        errors.append(f"{key}:beat: must be true or false")
    return errors


def _build_problems(key: str, project: dict[str, Any]) -> list[str]:
    """Errors in what a release is built and run with: requirements, app server, hooks."""
    errors = []
    requirements = project.get("requirements")
    if requirements is not None and (
        not isinstance(requirements, str) or not requirements or requirements.startswith("/") or ".." in requirements.split("/")
    ):
        errors.append(f"{key}:requirements: must be a path inside the project, e.g. requirements/production.txt")
    errors += __utils__["saltdjango_app_server.problems"](key, project, app_server_kinds())  # noqa: F821
    health = project.get("health") or {}
    path = health.get("path") if isinstance(health, dict) else ""
    if path is not None and not (isinstance(path, str) and re.match(r"^/\S*$", path)):
        errors.append(f"{key}:health:path: must be a URL path of the project, e.g. /health/")
    database = project.get("database") or {}
    for field in ("name", "user"):
        value = database.get(field) if isinstance(database, dict) else None
        if value is not None and not _SQL_NAME.match(str(value)):
            errors.append(f"{key}:database:{field}: {value!r} must match {_SQL_NAME.pattern} (it is written into SQL and pg_hba.conf)")
    static = project.get("static") or {}
    keep = (static.get("keep") or {}) if isinstance(static, dict) else None
    if not isinstance(keep, dict):
        errors.append(f"{key}:static:keep: must be a mapping with releases and days")
    else:
        for field in ("releases", "days"):
            value = keep.get(field, 0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                errors.append(f"{key}:static:keep:{field}: must be a number, 0 or more")
    hooks = project.get("hooks") or {}
    if not isinstance(hooks, dict):
        return [*errors, f"{key}:hooks: must be a mapping of {', '.join(HOOK_STAGES)}"]
    for stage, items in hooks.items():
        if stage not in HOOK_STAGES:
            errors.append(f"{key}:hooks:{stage}: unknown stage; known: {', '.join(HOOK_STAGES)}")
            continue
        for index, item in enumerate(items or []):
            try:
                hook_command(item)
            except ValueError as exc:
                errors.append(f"{key}:hooks:{stage}:{index}: {exc}")
    return errors


def uses_storage(project: Any) -> bool:
    """Whether ``project`` (its pillar) keeps its uploads on the cluster's own
    storage server: ``media: {backend: s3}`` with no ``endpoint``.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.uses_storage '{media: {backend: s3}}'
    """
    media = project.get("media") if isinstance(project, dict) else None
    return isinstance(media, dict) and media.get("backend") == "s3" and not media.get("endpoint")


def _endpoint_problems(endpoint: Any) -> list[str]:
    """Why ``endpoint`` is not the base URL of an S3-compatible service."""
    if not isinstance(endpoint, str) or not endpoint:
        return ["must be a URL, e.g. https://s3.example.org"]
    try:
        url = urllib.parse.urlsplit(endpoint)
        url.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return [f"{endpoint!r} is not a URL"]
    if url.scheme != "https":
        return [f"{endpoint!r} must be https:// (keys and uploads cross networks we do not control)"]
    if not url.hostname or url.username or url.password or url.query or url.fragment or url.path not in ("", "/"):
        return [f"{endpoint!r} must be scheme://host[:port] only (the bucket is media:bucket, the keys are secrets)"]
    return []


def _media_problems(name: str, project: Any, roles: list[str] | None, storage: list[str] | None) -> list[str]:
    """Errors in ``projects:<name>:media``. ``roles``: this server's (None: a
    single server's); ``storage``: the cluster's storage servers (None: a single server)."""
    key = f"projects:{name}:media"
    if not isinstance(project, dict) or project.get("media") is None:
        return []
    media = project["media"]
    if not isinstance(media, dict):
        return [f"{key}: must be a mapping, e.g. {{backend: s3}}"]
    backend = media.get("backend", "local")
    if backend not in MEDIA_BACKENDS:
        return [f"{key}:backend: {backend!r} is not supported; supported: {', '.join(MEDIA_BACKENDS)}"]
    errors = []
    limit = media.get("max_upload_mb")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100000):
        errors.append(f"{key}:max_upload_mb: must be a whole number of MB, 1 or more")
    if backend == "local":
        return errors
    if media.get("bucket") is not None and not _BUCKET.match(str(media["bucket"])):
        errors.append(f"{key}:bucket: {media['bucket']!r} must match {_BUCKET.pattern} (an S3 bucket name)")
    if media.get("region") is not None and not _REGION.match(str(media["region"])):
        errors.append(f"{key}:region: {media['region']!r} is not a region name, e.g. us-east-1")
    if media.get("endpoint"):
        errors.extend(f"{key}:endpoint: {p}" for p in _endpoint_problems(media["endpoint"]))
    elif storage is None:
        errors.append(f"{key}:endpoint: required on a single server: the storage role (salt-django's own object store) is for a cluster")
    elif not storage:
        errors.append(f"{key}: backend s3 without an endpoint needs a server with the role storage (pillar/topology.yaml)")
    held = _topology("roles_of")({}, "", True) if roles is None else roles
    values = project.get("secrets") if isinstance(project.get("secrets"), dict) else {}
    for secret in [s for s in _topology("media_secrets")() if _topology("needs_secret")(held, s)]:
        errors.extend(f"projects:{name}:secrets:{secret} {p}" for p in _password_problems(values.get(secret)))
    return errors


def hook_command(item: Any) -> dict[str, Any]:
    """A hook of pillar ``hooks:<stage>`` as ``{"manage" or "run": argv, "each": bool, "label": str}``.

    A string is a management command line; a mapping names ``manage`` (a
    management command line) or ``run`` (a command in the release) and may
    set ``each: true`` (in a cluster: on every app server, not once).

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.hook_command '{manage: [migrate_schemas], each: true}'
    """
    spec = {"manage": item} if isinstance(item, str) else item
    if not isinstance(spec, dict):
        raise ValueError("must be a management command (string) or a mapping with manage or run")
    unknown = set(spec) - {"manage", "run", "each"}
    kinds = [k for k in ("manage", "run") if spec.get(k)]
    if unknown or len(kinds) != 1:
        raise ValueError("must have exactly one of manage or run (and optionally each)")
    try:
        argv = shlex.split(str(spec[kinds[0]]))
    except ValueError as exc:
        raise ValueError(f"cannot be split into arguments: {exc}") from None
    if not argv:
        raise ValueError("is empty")
    if kinds[0] == "run" and (argv[0].startswith("/") or ".." in argv[0].split("/")):
        raise ValueError(f"run: {argv[0]} must be a command inside the release (a relative path)")
    return {kinds[0]: argv, "each": bool(spec.get("each", False)), "label": " ".join(argv)}


def _validate_roles(roles: Any) -> list[str]:
    """Errors in this minion's role list (``salt_django:roles``)."""
    if not isinstance(roles, list):
        return ["salt_django:roles: must be a list"]
    known = _topology("known_roles")()
    unknown = sorted(set(map(str, roles)) - set(known))
    if unknown:
        return [f"salt_django:roles: unknown role(s) {', '.join(unknown)}; known: {', '.join(known)}"]
    return []


def topology(pillar: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Roles of every server of the cluster (``topology:hosts``), by minion id.

    Empty on a single server (masterless): it holds every role but ``lb``.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.topology
    """
    data = __pillar__ if pillar is None else pillar  # noqa: F821 - injected by the Salt loader
    hosts = (data.get("topology") or {}).get("hosts") or {}
    if not isinstance(hosts, dict):
        return {}
    return {str(name): list((spec or {}).get("roles") or []) if isinstance(spec, dict) else [] for name, spec in hosts.items()}


def members(roles: str | list[str], pillar: dict[str, Any] | None = None) -> list[str]:
    """Minion ids, sorted, of the cluster's servers that hold any of ``roles``.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.members app
    """
    wanted = {roles} if isinstance(roles, str) else set(roles)
    return sorted(name for name, held in topology(pillar).items() if wanted & set(held))


def _published() -> tuple[dict[str, str], dict[str, str]]:
    """``trusted_addresses`` of every server of the topology, from the Salt mine."""
    names = sorted(topology())
    found = (__salt__["mine.get"](names, _topology("mine_address")(), tgt_type="list") or {}) if names else {}  # noqa: F821
    network = (__pillar__.get("topology") or {}).get("private_network")  # noqa: F821
    return _topology("trusted_addresses")({name: found[name] for name in names if name in found}, network)


def addresses(roles: str | list[str]) -> dict[str, str]:
    """Private address of each server holding any of ``roles``, from the Salt mine.

    A server whose minion never published its address (not started yet), or
    published one that is not trusted (``refused_addresses``), is left out:
    callers decide whether that is an error.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.addresses '[app, worker]'
    """
    return _addresses_of(roles, _published()[0])


def _addresses_of(roles: str | list[str], accepted: dict[str, str]) -> dict[str, str]:
    """The ``accepted`` addresses of the servers holding any of ``roles``."""
    return {name: accepted[name] for name in members(roles) if name in accepted}


def refused_addresses() -> dict[str, str]:
    """Servers whose published address is not trusted, and why (see ``trusted_addresses``).

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.refused_addresses
    """
    return _published()[1]


def _own_address() -> str:
    """This server's private address, by the rule its mine function uses."""
    network = (__pillar__.get("topology") or {}).get("private_network")  # noqa: F821
    found = __salt__["network.ip_addrs"](cidr=network) if network else __salt__["network.ip_addrs"](type="private")  # noqa: F821
    return found[0] if found else ""


def bind_addresses() -> list[str]:
    """Addresses a shared service (PostgreSQL, Redis) listens on besides loopback:
    this server's private address in a cluster, none on a single server.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.bind_addresses
    """
    if not topology():
        return []
    own = _own_address()
    return [own] if own else []


def _host_problems(host: Any) -> list[str]:
    """Errors in pillar ``host`` (salt/host), each naming its key."""
    if host is None:
        return []
    if not isinstance(host, dict):
        return ["host: must be a mapping"]
    errors = [
        f"host:{key}: must be true or false"
        for key in ("unattended_upgrades", "ssh_hardening")
        if key in host and not isinstance(host[key], bool)
    ]
    servers = host.get("ntp_servers", [])
    if not isinstance(servers, list) or not all(_is_address(s) or not _domain_problems(s) for s in servers):
        errors.append("host:ntp_servers: must be a list of host names or addresses")
    return errors


def _is_address(value: Any) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


def _sshd_ports() -> list[int]:
    """The TCP ports sshd listens on here: a firewall keeps them open whatever pillar says."""
    listening = __salt__["cmd.run"](["ss", "-Hltnp"], python_shell=False, ignore_retcode=True) or ""  # noqa: F821
    ports = {line.split()[3].rsplit(":", 1)[1] for line in listening.splitlines() if '"sshd"' in line and len(line.split()) > 3}
    return sorted(int(port) for port in ports if port.isdigit())


def firewall(ports: dict[str, int]) -> dict[str, Any]:
    """What this server's firewall opens, and to whom (``_utils/saltdjango_firewall.py``).

    ``ports``: the ports of the services (``http``, ``https``, ``web``, ``db``,
    ``cache``, ``storage``), as their components configure them. The sources
    are the trusted mine addresses of the servers that use each one. SSH (22
    and whatever sshd listens on) is always open, to ``firewall:ssh_sources``
    (empty: anyone).

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.firewall '{http: 80, https: 443, web: 8080, db: 5432, cache: 6379, storage: 8333}'
    """
    settings = __pillar__.get("firewall") or {}  # noqa: F821
    if __utils__["saltdjango_firewall.problems"](settings):  # noqa: F821
        # Render-safe: validation names the bad key and stops the run; SSH stays open to anyone meanwhile.
        settings = {"enabled": settings.get("enabled", True) if isinstance(settings, dict) else True}
    cluster = bool(topology())
    roles = _held_roles(__pillar__)  # noqa: F821
    # One mine round trip for the three roles.
    accepted = _published()[0] if cluster else {}
    peers = {role: sorted(_addresses_of(role, accepted).values()) for role in ("lb", "app", "worker")}
    openings = __utils__["saltdjango_firewall.openings"](  # noqa: F821
        roles, cluster, ports, peers, [22, *_sshd_ports()], [str(s) for s in settings.get("ssh_sources") or []] or None
    )
    return {"enabled": settings.get("enabled", True), "roles": roles, "openings": openings, "client_ports": _client_ports()}


def _held_roles(data: dict[str, Any]) -> list[str]:
    """This server's roles by pillar ``salt_django:roles`` (pillar/topology.sls sets
    them); without them, a single server's."""
    held = (data.get("salt_django") or {}).get("roles")
    return [str(r) for r in held] if isinstance(held, list) else list(_topology("roles_of")({}, "", True))


def _client_ports() -> str:
    """The local ports this server's own outgoing connections use (``ip_local_port_range``), as nft writes a range."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as held:
            low, high = held.read().split()
        return f"{int(low)}-{int(high)}"
    except (OSError, ValueError):
        return "32768-60999"


def _validate_cluster(data: dict[str, Any], minion: str) -> list[str]:
    """Errors in the cluster description as this minion sees it."""
    hosts = topology(data)
    if not hosts:
        return []
    errors = []
    for name, held in sorted(hosts.items()):
        unknown = sorted(set(map(str, held)) - set(_topology("known_roles")()))
        if unknown:
            errors.append(f"topology:hosts:{name}:roles: unknown role(s) {', '.join(unknown)}")
    if minion not in hosts:
        errors.append(f"topology:hosts: minion {minion} is not listed, so it has no role (pillar/topology.yaml)")
    for role in ("db", "cache", "app"):
        if not members(role, data):
            errors.append(f"topology:hosts: no server has the role {role}")
    for name, project in (data.get("projects") or {}).items():
        if isinstance(project, dict) and project.get("workers") and not members("worker", data):
            errors.append(f"projects:{name}:workers: no server has the role worker (topology:hosts), so nothing would run them")
    if len(members("app", data)) > 1 and _topology("needs_secret")(hosts.get(minion, []), "SECRET_KEY"):
        for name, project in (data.get("projects") or {}).items():
            if isinstance(project, dict) and not (project.get("secrets") or {}).get("SECRET_KEY"):
                errors.append(f"projects:{name}:secrets:SECRET_KEY is missing: every app server must sign with the same key")
    return errors


def validate(pillar: dict[str, Any] | None = None, minion: str | None = None) -> list[str]:
    """Every error in the deployment description; empty when it can be applied.

    Reads this minion's pillar unless one is passed (the orchestrator and the
    unit tests pass one). On an app server of a cluster, the database and
    cache servers must have published their addresses (Salt mine).

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.validate
    """
    data = __pillar__ if pillar is None else pillar  # noqa: F821 - injected by the Salt loader
    minion = minion or __opts__.get("id", "")  # noqa: F821
    roles = (data.get("salt_django") or {}).get("roles")
    errors = _validate_roles([] if roles is None else roles)
    errors += _validate_cluster(data, minion)
    errors += __utils__["saltdjango_firewall.problems"](data.get("firewall"))  # noqa: F821
    errors += _host_problems(data.get("host"))
    # pillar/topology.sls always sets the roles; without them (a pillar passed in): a single server's.
    held = [str(r) for r in roles] if isinstance(roles, list) else None
    projects = data.get("projects")
    if not isinstance(projects, dict) or not projects:
        return [*errors, "projects: must define at least one project"]
    # Schedules are read by django_schedule, as salt/schedule renders them.
    mods = globals().get("__salt__", {})
    checks = [(mods.get(f"django_schedule.{check}"), key) for check, key in (("job_problems", "schedule"), ("backup_problems", "backups"))]
    storage = members("storage", data) if topology(data) else None
    for name, project in projects.items():
        errors.extend(_validate_project(name, project, held))
        errors.extend(_media_problems(name, project, held, storage))
        for check, key in checks:
            if check and isinstance(project, dict):
                errors.extend(check(f"projects:{name}", project.get(key)))
    errors += _port_problems(projects, live=pillar is None)
    if pillar is None and topology() and {"app", "worker"} & set(data.get("salt_django", {}).get("roles", [])):
        needed = ("db", "cache", "storage") if any(uses_storage(p) for p in projects.values()) else ("db", "cache")
        for role in needed:
            if members(role) and not addresses(role):
                errors.append(
                    f"topology:hosts: no {role} server ({', '.join(members(role))}) has published its address"
                    f" in the Salt mine: is its minion up? (salt {members(role)[0]} mine.update)"
                )
    return errors


def _port_problems(projects: dict[str, Any], live: bool = False) -> list[str]:
    """Projects whose app servers would listen on the same loopback port
    (kind mod_wsgi), and (``live``: on the server itself) a project whose
    port would change while it serves on it: Nginx would pass to the new
    port before the switch started anything there."""
    server_defaults = (defaults().get("project") or {}).get("app_server") or {}
    settings, kinds = __utils__["saltdjango_app_server.settings"], app_server_kinds()  # noqa: F821
    servers = {name: settings(p, server_defaults, kinds, 1, name) for name, p in projects.items() if isinstance(p, dict)}
    errors = __utils__["saltdjango_app_server.port_problems"](servers)  # noqa: F821
    served = globals().get("__salt__", {}).get("app_slots.served_port") if live else None
    for name, server in servers.items() if served else ():
        found = served(name)
        if found and found["port"] != server["port"] + ("a", "b").index(found["slot"]):
            errors.append(
                f"projects:{name}:app_server:port: {server['port']} would cut {name} off: it serves on"
                f" 127.0.0.1:{found['port']} (slot {found['slot']}) until its next switch. Keep port"
                f" {found['port'] - ('a', 'b').index(found['slot'])} in this apply; to move it, serve with another kind first"
            )
    return errors


def deprecations(pillar: dict[str, Any] | None = None) -> list[str]:
    """What the pillar still says the older way, each naming the key that now holds it.

    Still applied as before; the validation state shows these as warnings.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.deprecations
    """
    data = __pillar__ if pillar is None else pillar  # noqa: F821
    projects = data.get("projects")
    if not isinstance(projects, dict):
        return []
    deprecated = __utils__["saltdjango_app_server.deprecations"]  # noqa: F821
    return [text for name, project in projects.items() for text in deprecated(f"projects:{name}", project)]


def _project_config(name: str, raw: dict[str, Any], defaults: dict[str, Any], kinds: dict[str, Any], cpus: int = 1) -> dict[str, Any]:
    """One project's settings with defaults applied and name-derived values filled in.

    Secrets are dropped: states get them from pillar by key, so that a value
    never lands in rendered SLS through this mapping.
    """
    cfg = _topology("merge")(copy.deepcopy(defaults), {k: v for k, v in raw.items() if k != "secrets"})
    # The TLS key and the ACME account's EAB key are secrets too (salt/tls reads them from pillar by key).
    tls = cfg.get("tls")
    if isinstance(tls, dict):
        tls.pop("private_key", None)
        if isinstance(tls.get("acme"), dict):
            tls["acme"].pop("eab_hmac_key", None)
    cfg["name"] = name
    domains = cfg.get("domains")
    # Render-safe even when the pillar is invalid: the validation state, not a
    # Jinja error, must be what reports a missing domain.
    cfg["primary_domain"] = domains[0] if isinstance(domains, list) and domains and isinstance(domains[0], str) else ""
    cfg["user"] = cfg.get("user") or name
    cfg["source"] = cfg.get("source") or f"salt://projects/{name}"
    cfg["wsgi"] = cfg.get("wsgi") or f"{name}.wsgi:application"
    cfg["asgi"] = cfg.get("asgi") or f"{name}.asgi:application"
    settings = cfg["settings"]
    settings["base"] = settings.get("base") or f"{name}.settings"
    if settings.get("wrapper", True):
        settings["module"] = "salt_django_settings"
    else:
        settings["module"] = settings.get("module") or settings["base"]
    cfg["database"]["name"] = cfg["database"].get("name") or name
    cfg["database"]["user"] = cfg["database"].get("user") or name
    # The legacy gunicorn key is read into app_server, the one place templates read.
    cfg.pop("gunicorn", None)
    server_defaults = (defaults or {}).get("app_server") or {}
    cfg["app_server"] = __utils__["saltdjango_app_server.settings"](raw, server_defaults, kinds, cpus, name)  # noqa: F821
    workers = cfg["workers"] = {"kind": "celery", **(cfg.get("workers") or {})}
    workers["enabled"] = isinstance(raw.get("workers"), dict) and bool(raw["workers"])
    workers["queues"] = _worker_queues(workers)
    workers["concurrency"] = workers.get("concurrency") or max(int(cpus), 1)
    media = cfg.setdefault("media", {})
    if isinstance(media, dict):
        # Render-safe as above: validation names a bad value, Jinja never trips on one.
        media["bucket"] = _bucket(name, media)
        media["internal"] = uses_storage(raw)
        media["endpoint"] = media.get("endpoint") or ""
    cfg.update(paths(name))
    # Render-safe: a bad value is validation's to report, not the header builder's.
    valid = not __utils__["saltdjango_edge.problems"](f"projects:{name}", raw)  # noqa: F821
    cfg["edge_headers"] = __utils__["saltdjango_edge.headers"](cfg) if valid else []  # noqa: F821
    cfg["edge_media_headers"] = __utils__["saltdjango_edge.headers"](cfg, sandbox=True) if valid else []  # noqa: F821
    cfg["edge_owned_headers"] = __utils__["saltdjango_edge.owned_headers"]()  # noqa: F821
    return cfg


def _runs(workers: dict[str, Any], roles: list[str], periodic_here: bool) -> dict[str, bool]:
    """What of a project this server runs: ``web`` (its app-server slots),
    ``workers`` (its queue workers) and ``beat`` (the queue's periodic tasks:
    Celery beat or RQ's cron, on one server of a cluster only)."""
    workers_here = bool(workers.get("enabled")) and "worker" in roles
    periodic = bool(workers.get("beat")) if workers.get("kind") == "celery" else bool(workers.get("cron"))
    return {"web": "app" in roles, "workers": workers_here, "beat": workers_here and periodic and periodic_here}


def periodic_server(pillar: dict[str, Any] | None = None) -> str | None:
    """The one server of a cluster that runs the queues' periodic tasks (beat):
    the first worker server by minion id, none in a single server's pillar.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.periodic_server
    """
    found = members("worker", pillar)
    return found[0] if found else None


def paths(name: str) -> dict[str, str]:
    """Where project ``name`` lives on a server: ``root`` (releases, ``current``,
    ``shared``), ``conf_dir``, ``env_file``, ``run_dir`` and ``log_dir``.

    Derived from the name alone, so that a module needing only a path reads
    neither pillar nor the mine (``project`` does both), and a project gone
    from pillar can still be found.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.paths demo
    """
    return {
        "root": f"/srv/{name}",
        "conf_dir": f"/etc/{name}",
        "env_file": f"/etc/{name}/env",
        "run_dir": f"/srv/{name}/shared/run",
        "log_dir": f"/var/log/{name}",
    }


def projects(defaults: dict[str, Any] | None = None, pillar: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every project of pillar ``projects`` through ``project_config``.

    Called from ``app/map.jinja`` with ``app/defaults.yaml``, so that the
    SLS files only read data. In a cluster the database and cache hosts are
    the db and cache servers' private addresses (Salt mine), unless the
    project's pillar names a host itself (e.g. a managed database).

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.projects
    """
    data = __pillar__ if pillar is None else pillar  # noqa: F821
    cpus = __grains__.get("num_cpus", os.cpu_count() or 1) if pillar is None else 1  # noqa: F821
    raw = data.get("projects") or {}
    if not isinstance(raw, dict):
        return {}
    found: dict[str, str] = {}
    storage_url = ""
    if pillar is None and topology():
        for role, key in (("db", "database"), ("cache", "cache")):
            peers = addresses(role)
            found[key] = peers[min(peers)] if peers else ""
        if any(uses_storage(p) for p in raw.values()):
            peers = addresses("storage")
            storage_url = f"http://{_url_host(peers[min(peers)])}:{storage_settings()['port']}" if peers else ""
    roles = _held_roles(data)
    kinds = app_server_kinds()
    minion = __opts__.get("id", "") if pillar is None else ""  # noqa: F821
    periodic = periodic_server(data)
    configs = {}
    for name, cfg in raw.items():
        if not isinstance(cfg, dict):
            continue
        cfg = copy.deepcopy(cfg)
        for key, host in found.items():
            section = cfg.setdefault(key, {})
            if isinstance(section, dict) and not section.get("host"):
                section["host"] = host
        configs[name] = _project_config(name, cfg, defaults or {}, kinds, cpus)
        configs[name]["runs"] = _runs(configs[name]["workers"], roles, periodic in (None, minion))
        media = configs[name]["media"]
        if not isinstance(media, dict):
            continue
        if media.get("internal"):
            # The storage server's S3 proxy (salt/storage), over the private network.
            media["endpoint"] = storage_url
        media.update(_endpoint_parts(media.get("endpoint") or ""))
    return configs


def _endpoint_parts(endpoint: str) -> dict[str, str]:
    """What Nginx needs to proxy ``/media/`` to an S3 endpoint: ``scheme``,
    ``hostname`` (TLS name), ``netloc`` (the Host header) and ``upstream``
    (host:port, the port the scheme implies when the URL has none). All
    empty when the endpoint is unknown or not a URL (validation names it)."""
    try:
        url = urllib.parse.urlsplit(endpoint)
        port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    except ValueError:
        port = None
    if not endpoint or not url.hostname or not port:
        return {"scheme": "", "hostname": "", "netloc": "", "upstream": ""}
    return {"scheme": url.scheme, "hostname": url.hostname, "netloc": url.netloc, "upstream": f"{_url_host(url.hostname)}:{port}"}


def storage_settings() -> dict[str, Any]:
    """``storage/defaults.yaml`` merged with pillar ``storage``: what ``storage/map.jinja``
    reads, and where app servers find the storage server's S3 port.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.storage_settings
    """
    pillar = __pillar__.get("storage") or {}  # noqa: F821
    return _topology("merge")(_fileserver_yaml(STORAGE_DEFAULTS_URL)["storage"], pillar if isinstance(pillar, dict) else {})


def _bucket(name: str, media: dict[str, Any]) -> str:
    """Project ``name``'s bucket: ``media:bucket``, else ``<name>-media`` (a bucket name allows no underscore)."""
    return str(media.get("bucket") or f"{name.replace('_', '-')}-media")


def storage_buckets(pillar: dict[str, Any] | None = None) -> dict[str, str]:
    """Project -> bucket, for every project whose uploads live on the cluster's
    storage server (``uses_storage``): the buckets salt/storage creates, each
    reachable with its project's keys only. No secret: the identities file
    reads the keys from pillar itself.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.storage_buckets
    """
    data = __pillar__ if pillar is None else pillar  # noqa: F821
    raw = data.get("projects") or {}
    if not isinstance(raw, dict):
        return {}
    found = {}
    for name, project in sorted(raw.items()):
        if uses_storage(project):
            found[str(name)] = _bucket(str(name), project["media"])
    return found


def defaults() -> dict[str, Any]:
    """``app/defaults.yaml`` of the state tree: the one place every default is defined.

    Read once per run through the fileserver, so that modules, states and
    ``map.jinja`` agree on every default.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.defaults
    """
    return _fileserver_yaml(DEFAULTS_URL)


def app_server_kinds() -> dict[str, dict[str, Any]]:
    """The kinds of app server ``app/defaults.yaml`` declares (``app_servers``):
    package, version, module and protocol of each.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.app_server_kinds
    """
    kinds = defaults().get("app_servers")
    errors = __utils__["saltdjango_app_server.kind_problems"](kinds)  # noqa: F821
    if errors:
        raise RuntimeError(f"{DEFAULTS_URL}: {'; '.join(errors)}")
    return kinds


def _fileserver_yaml(url: str) -> dict[str, Any]:
    """A YAML file of the state tree (a ``defaults.yaml``), read once per run
    through the fileserver; each caller gets its own copy to merge into."""
    cache = __context__  # noqa: F821 - injected by the Salt loader
    key = f"saltdjango.yaml:{url}"
    if key not in cache:
        text = __salt__["cp.get_file_str"](url)  # noqa: F821
        if not text:
            raise RuntimeError(f"cannot read {url} from the fileserver")
        cache[key] = yaml.safe_load(text)
    return copy.deepcopy(cache[key])


def log_tail(project: str, log: str, lines: int = 8, skip: str | None = None) -> str:
    """The last ``lines`` lines of the project's log ``log`` (in its log dir),
    but those matching the regular expression ``skip``, on one line, secrets
    masked: why a program failed, said in a result that reaches the job cache.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.log_tail demo worker.log
    """
    if not re.fullmatch(r"[a-z0-9_.-]+\.log", log):
        raise ValueError(f"{log!r} is not a log file name of the project's log dir")
    path = os.path.join(paths(project)["log_dir"], log)
    skipped = re.compile(skip) if skip else None
    try:
        with open(path, "rb") as handle:
            handle.seek(max(os.fstat(handle.fileno()).st_size - 65536, 0))
            text = handle.read().decode(errors="replace").strip().splitlines()
    except OSError as exc:
        return f"({path}: {exc.strerror})"
    tail = [line for line in text if not (skipped and skipped.match(line))][-lines:]
    return mask_secrets(" | ".join(tail), project)


def project(name: str) -> dict[str, Any]:
    """One project's merged configuration (``app/defaults.yaml`` + pillar), as ``map.jinja`` has it.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.project demo
    """
    found = projects(defaults()["project"])
    if name not in found:
        raise KeyError(f"projects:{name} is not in pillar")
    return found[name]


def app_settings() -> dict[str, Any]:
    """Pillar ``app`` merged over the ``app`` defaults (build user, uv version, packages).

    ``installer`` (uv or pip), ``python`` and ``pip`` are pillar
    ``salt_django:<key>``, where set.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.app_settings
    """
    data = __pillar__  # noqa: F821
    merged = _topology("merge")(defaults()["app"], copy.deepcopy(data.get("app") or {}))
    overrides = data.get("salt_django") or {}
    for key in ("installer", "python", "pip"):
        if overrides.get(key) is not None:
            merged[key] = overrides[key]
    return merged


def secret_variables(name: str, pillar: dict[str, Any] | None = None) -> dict[str, str]:
    """Env variable -> pillar key under ``projects:<name>:secrets``, for every secret of the project.

    The three salt-django knows (SECRET_KEY, DB_PASSWORD, REDIS_PASSWORD)
    get their Django-side names; any other secret keeps its own name, but
    the server secrets (``saltdjango_topology.SERVER_SECRETS``), which no app process needs.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.secret_variables demo
    """
    data = __pillar__ if pillar is None else pillar  # noqa: F821
    raw = (((data.get("projects") or {}).get(name) or {}).get("secrets")) or {}
    found = {var: key for key, var in SECRET_VARIABLES.items()}
    if isinstance(raw, dict):
        others = [str(key) for key in raw if str(key) not in SECRET_VARIABLES and _topology("needs_secret")(["app"], str(key))]
        found.update({key: key for key in others if _ENV_KEY.match(key)})
    return found


def secret_names(name: str) -> list[str]:
    """Every env variable of project ``name`` that holds a secret: its pillar secrets and the URLs derived from them.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.secret_names demo
    """
    return [*secret_variables(name), *DERIVED_SECRET_VARIABLES]


def service_urls(values: dict[str, str]) -> dict[str, str]:
    """``DATABASE_URL``, ``REDIS_URL`` and ``CACHE_URL`` (and the queue's
    ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND``, or ``RQ_REDIS_URL``) from the discrete variables of an env.

    The forms dj-database-url and django-environ read; user and password
    are percent-encoded.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.service_urls '{DATABASE_HOST: 10.0.0.2, DATABASE_NAME: demo}'
    """

    def quoted(key: str) -> str:
        return urllib.parse.quote(values.get(key, ""), safe="")

    urls = {}
    if values.get("DATABASE_HOST") and values.get("DATABASE_NAME"):
        urls["DATABASE_URL"] = (
            f"postgres://{quoted('DATABASE_USER')}:{quoted('DATABASE_PASSWORD')}@{_url_host(values['DATABASE_HOST'])}"
            f":{values.get('DATABASE_PORT') or 5432}/{quoted('DATABASE_NAME')}"
        )
    if values.get("REDIS_HOST"):
        redis = (
            f"redis://{quoted('REDIS_USER')}:{quoted('REDIS_PASSWORD')}@{_url_host(values['REDIS_HOST'])}"
            f":{values.get('REDIS_PORT') or 6379}/{values.get('REDIS_DB') or 0}"
        )
        urls["REDIS_URL"] = urls["CACHE_URL"] = redis
        # What Celery and RQ's command line read from the environment (projects
        # without the settings wrapper, cookiecutter-django's among them).
        if values.get("SALT_DJANGO_WORKERS") == "celery":
            urls["CELERY_BROKER_URL"] = urls["CELERY_RESULT_BACKEND"] = redis
        elif values.get("SALT_DJANGO_WORKERS") == "rq":
            urls["RQ_REDIS_URL"] = redis
    return urls


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _mask(text: str, values: list[str]) -> str:
    """``text`` with every one of ``values`` (secrets, at least 4 characters) replaced by ``********``."""
    for value in sorted((v for v in values if v and len(v) >= 4), key=len, reverse=True):
        text = text.replace(value, "********").replace(urllib.parse.quote(value, safe=""), "********")
    return text


def mask_secrets(text: str, name: str) -> str:
    """``text`` (a log tail, a command's output) with the secrets of project ``name`` masked.

    Masks what the app's env file holds for every secret variable, so that
    a comment that reaches the job cache carries none of them.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.mask_secrets "$(tail /var/log/demo/app.log)" demo
    """
    env = __utils__["saltdjango_env.read"](paths(name)["env_file"])  # noqa: F821
    return _mask(text, [env[var] for var in secret_names(name) if var in env])


def generate_secret(length: int = 64) -> str:
    """A random value from letters and digits, strong for any of our secrets.

    CLI Example:

    .. code-block:: bash

        salt-call saltdjango.generate_secret 32
    """
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))
