"""Virtualenvs and build steps of a release, run as an unprivileged build user.

A project declares its dependencies the way real projects do: a
``requirements.txt`` that includes others (``-r``, ``-c``), a pillar
``requirements:`` path such as ``requirements/production.txt``, or
``pyproject.toml`` + ``uv.lock``. Everything that decides what a virtualenv
holds (the interpreter, every requirements file reached, the lock, the
installer and its version, the app server salt-django adds, the index
options) goes into its key, so that a change to any of them builds a new
virtualenv and nothing else does.

Installers, ``setup.py`` and build hooks run as the build user (pillar
``app:build_user``), never as root: a package's build code gets no more
than that account. The trees they wrote are handed to root once they are
done, so that the app user can read its code but not change it.

``uv.lock`` is installed through ``uv export`` + ``uv pip install
--require-hashes``: the same pinned, hashed set as ``uv sync --frozen``,
but honouring ``salt_django:pip`` (``uv sync --frozen`` downloads from the
URLs recorded in the lock whatever index is configured, so an air-gapped
server could not build).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import subprocess
import tempfile
from typing import Any

__virtualname__ = "django_build"

_INCLUDE = re.compile(r"^\s*(?:-r|-c|--requirement|--constraint)(?:\s*=\s*|\s+|(?=\S))(?P<path>\S+)")
#: A requirement that is a path in the project (``./vendor/pkg``, ``-e ../lib``, ``file:./x.whl``).
_LOCAL = re.compile(r"^\s*(?:(?:-e|--editable)(?:\s*=\s*|\s+))?(?:file:)?(?P<path>\.\.?/[^\s;#\[]*)")
#: What building a local package leaves in its tree: not part of what it is.
_BUILD_LEFTOVERS = {"__pycache__", "build", "dist", ".git"}
_CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"


class BuildError(RuntimeError):
    """A build step failed; the message names the step and the cause."""


def __virtual__() -> str:
    """Stdlib only; uv or pip and the server's Python do the work."""
    return __virtualname__


def pip_args(pip: dict[str, Any] | None) -> list[str]:
    """Index options from pillar ``salt_django:pip``, understood by pip and uv alike.

    CLI Example:

    .. code-block:: bash

        salt-call django_build.pip_args '{"find_links": ["/srv/wheelhouse"], "no_index": true}'
    """
    pip = pip or {}
    args = []
    if pip.get("index_url"):
        args += ["--index-url", str(pip["index_url"])]
    for link in pip.get("find_links") or []:
        args += ["--find-links", str(link)]
    if pip.get("no_index"):
        args.append("--no-index")
    return args


def _requirement_files(release_dir: str, entry: str) -> dict[str, bytes]:
    """Every requirements file ``entry`` reaches through ``-r`` and ``-c``, by path
    relative to the release, and every local package they install (see ``_local_package``).
    """
    found: dict[str, bytes] = {}
    root = os.path.realpath(release_dir)
    pending = [entry]
    while pending:
        relpath = os.path.normpath(pending.pop())
        if relpath in found:
            continue
        path = _inside(root, relpath)
        try:
            with open(path, "rb") as handle:
                found[relpath] = handle.read()
        except OSError as exc:
            raise BuildError(f"cannot read {relpath}: {exc.strerror}") from None
        for line in found[relpath].decode(errors="replace").splitlines():
            match = _INCLUDE.match(line)
            if match and "://" not in match["path"]:
                pending.append(os.path.join(os.path.dirname(relpath), match["path"]))
            local = _LOCAL.match(line)
            if local:
                found.update(_local_package(root, local["path"]))
    return found


def _inside(root: str, relpath: str) -> str:
    """The real path of ``relpath`` in the project at ``root`` (a real path); BuildError if it leads outside."""
    path = os.path.realpath(os.path.join(root, relpath))
    if os.path.commonpath([root, path]) != root:
        raise BuildError(f"{relpath} is outside the project")
    return path


def _local_package(root: str, relpath: str) -> dict[str, bytes]:
    """A package the requirements install from the project's own tree (pip reads
    such paths from the working directory, the release): its content, so that
    a change to a vendored package builds a new virtualenv. A directory is
    keyed ``<path>/`` with a digest of its files."""
    path = _inside(root, relpath)
    name = os.path.relpath(path, root)
    if os.path.isfile(path):
        with open(path, "rb") as handle:
            return {name: handle.read()}
    if not os.path.isdir(path):
        raise BuildError(f"local requirement {relpath} is not in the release")
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in _BUILD_LEFTOVERS and not d.endswith(".egg-info"))
        for filename in sorted(filenames):
            full = os.path.join(dirpath, filename)
            with open(full, "rb") as handle:
                digest.update(os.path.relpath(full, path).encode() + b"\0" + hashlib.sha256(handle.read()).digest())
    return {f"{name}/": digest.hexdigest().encode()}


def plan(release_dir: str, requirements: str | None = None) -> dict[str, Any]:
    """How a release declares its dependencies: ``{"kind", "entry", "files"}``.

    ``kind`` is ``requirements`` (a requirements file and what it includes),
    ``uv-lock`` (``pyproject.toml`` + ``uv.lock``), ``pyproject`` (its
    dependencies, unlocked) or ``none``. ``files`` are the files whose
    content decides the virtualenv.

    CLI Example:

    .. code-block:: bash

        salt-call django_build.plan /srv/demo/current
    """

    def exists(name: str) -> bool:
        return os.path.isfile(os.path.join(release_dir, name))

    if requirements:
        if not exists(requirements):
            raise BuildError(f"requirements file {requirements} (pillar projects:<p>:requirements) is not in the release")
        return {"kind": "requirements", "entry": requirements, "files": _requirement_files(release_dir, requirements)}
    if exists("uv.lock") and exists("pyproject.toml"):
        return {"kind": "uv-lock", "entry": "uv.lock", "files": _read(release_dir, "pyproject.toml") | _read(release_dir, "uv.lock")}
    if exists("requirements.txt"):
        return {"kind": "requirements", "entry": "requirements.txt", "files": _requirement_files(release_dir, "requirements.txt")}
    if exists("pyproject.toml"):
        return {"kind": "pyproject", "entry": "pyproject.toml", "files": _read(release_dir, "pyproject.toml")}
    return {"kind": "none", "entry": None, "files": {}}


def _read(release_dir: str, name: str) -> dict[str, bytes]:
    with open(os.path.join(release_dir, name), "rb") as handle:
        return {name: handle.read()}


def python_version(python: str) -> str:
    """``X.Y.Z`` of an interpreter.

    CLI Example:

    .. code-block:: bash

        salt-call django_build.python_version /usr/bin/python3
    """
    proc = subprocess.run([python, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"interpreter {python} does not run: {proc.stderr.strip()[-200:]}")
    return proc.stdout.strip()


def venv_key(python_info: str, deps: dict[str, Any], installer: str, additions: str, index: list[str]) -> str:
    """What a virtualenv is made of, hashed: interpreter, dependency files, installer, what salt-django adds, index options.

    CLI Example:

    .. code-block:: bash

        salt-call django_build.venv_key "$(python3 -VV)" '{files: {uv.lock: <sha256>}}' uv '' '[]'
    """
    digest = hashlib.sha256()
    for part in (python_info, deps["kind"], str(deps["entry"]), installer, additions, json.dumps(index)):
        digest.update(part.encode() + b"\0")
    for relpath in sorted(deps["files"]):
        digest.update(relpath.encode() + b"\0" + hashlib.sha256(deps["files"][relpath]).digest())
    return digest.hexdigest()[:16]


def _account(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise BuildError(f"build user {user} does not exist (pillar app:build_user; state app-build-user-present)") from None


def build_env(home: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a build step: the build user's ``home`` (pillar ``app:build_home``)
    with its caches, not root's; no Python downloads.

    CLI Example:

    .. code-block:: bash

        salt-call django_build.build_env /var/cache/salt-django-build
    """
    return {
        "PATH": _CLEAN_PATH,
        "LANG": "C.UTF-8",
        "HOME": home,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_CACHE_DIR": os.path.join(home, "pip"),
        "UV_CACHE_DIR": os.path.join(home, "uv"),
        "UV_PYTHON_DOWNLOADS": "never",
        # Copies, not hard links: the sealed virtualenv belongs to root, its cache to the build user.
        "UV_LINK_MODE": "copy",
        **(extra or {}),
    }


def run_as(user: str, cmd: list[str], cwd: str, step: str, env: dict[str, str], timeout: int = 1800) -> str:
    """Run one build step as ``user`` with ``env`` (see ``build_env``); its output, or BuildError naming the step and the last lines.

    CLI Example:

    .. code-block:: bash

        salt-call django_build.run_as salt-django-build '["id"]' /tmp id '{"PATH": "/usr/bin:/bin"}'
    """
    account = _account(user)
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            user=account.pw_uid,
            group=account.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"{step} timed out after {timeout}s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-8:])
        raise BuildError(f"{step} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def hand_to(user: str, path: str) -> None:
    """Give ``path`` (recursively, symlinks themselves, not their targets) to ``user``.

    CLI Example:

    .. code-block:: bash

        salt-call django_build.hand_to demo /srv/demo/releases/20261129T040000Z-1a2b3c4
    """
    account = _account(user) if user != "root" else pwd.getpwnam("root")
    subprocess.run(["chown", "-R", "-h", f"{account.pw_uid}:{account.pw_gid}", path], check=True, capture_output=True)


def seal(path: str) -> None:
    """Hand a tree back to root, writable by nobody else.

    CLI Example:

    .. code-block:: bash

        salt-call django_build.seal /srv/demo/releases/20261129T040000Z-1a2b3c4
    """
    subprocess.run(["chown", "-R", "-h", "0:0", path], check=True, capture_output=True)
    subprocess.run(["chmod", "-R", "go-w", path], check=True, capture_output=True)


def install(
    venv: str,
    release_dir: str,
    deps: dict[str, Any],
    settings: dict[str, Any],
) -> None:
    """Create ``venv`` and install the release's dependencies and the app server into it, as the build user.

    ``settings``: ``python`` and its ``version`` (``python_version``), ``installer`` (uv or pip), ``uv`` (its path),
    ``index`` (pip-style options), ``user`` (the build user), ``home`` (its home and caches),
    ``additions`` (``[(modules, requirement)]``: installed unless one of
    ``modules`` imports after the project's own requirements, e.g. the app
    server, so that a project's own pin wins).

    CLI Example:

    .. code-block:: bash

        salt-call django_build.install <release dir>/venv <release dir> '{kind: requirements}' '{installer: uv}'
    """
    user, python, index = settings["user"], settings["python"], settings["index"]
    env = build_env(settings["home"])
    version = settings["version"]
    problem = _requires_python_problem(release_dir, python, version)
    if problem:
        raise BuildError(problem)
    uv = settings["installer"] == "uv"
    if deps["kind"] in ("uv-lock", "pyproject") and not uv:
        raise BuildError(f"{deps['entry']} needs uv: set pillar salt_django:installer to uv, or name a requirements file")
    os.makedirs(venv, mode=0o755)
    hand_to(user, venv)
    if uv:
        run_as(user, [settings["uv"], "venv", "--quiet", "--python", python, venv], release_dir, "uv venv", env)
        installer = [settings["uv"], "pip", "install", "--quiet", "--python", os.path.join(venv, "bin", "python"), *index]
    else:
        run_as(user, [python, "-m", "venv", venv], release_dir, "python -m venv", env)
        installer = [os.path.join(venv, "bin", "pip"), "install", "--quiet", *index]
    name = "uv pip install" if uv else "pip install"
    try:
        if deps["kind"] == "uv-lock":
            with tempfile.TemporaryDirectory(dir=settings["home"]) as scratch:
                hand_to(user, scratch)
                locked = os.path.join(scratch, "locked.txt")
                export = [settings["uv"], "export", "--frozen", "--no-dev", "--no-emit-project", "--format", "requirements-txt"]
                run_as(user, [*export, "--quiet", "--output-file", locked], release_dir, "uv export (uv.lock)", env)
                run_as(user, [*installer, "--require-hashes", "-r", locked], release_dir, f"{name} (uv.lock)", env)
        elif deps["kind"] in ("requirements", "pyproject"):
            run_as(user, [*installer, "-r", deps["entry"]], release_dir, f"{name} -r {deps['entry']}", env)
        for modules, requirement in settings["additions"]:
            if not importable(venv, modules):
                run_as(user, [*installer, requirement], release_dir, f"{name} {requirement} (added by salt-django)", env)
    except BuildError as exc:
        raise BuildError(f"{exc} [this server's Python is {version} ({python})]") from None


def importable(venv: str, modules: list[str]) -> bool:
    """True when the virtualenv ``venv`` can import one of ``modules``.

    CLI Example:

    .. code-block:: bash

        salt-call django_build.importable /srv/demo/current/venv '[pyuwsgi]'
    """
    code = f"import importlib.util, sys; sys.exit(not any(importlib.util.find_spec(m) for m in {modules!r}))"
    return subprocess.run([os.path.join(venv, "bin", "python"), "-c", code], capture_output=True, check=False).returncode == 0


def additions(cfg: dict[str, Any]) -> list[tuple[list[str], str]]:
    """What salt-django adds to a project's virtualenv: the app server, and with
    the settings wrapper the PostgreSQL and Redis drivers it configures, and
    for uploads on S3 (``media: {backend: s3}``) django-storages and boto3.

    CLI Example:

    .. code-block:: bash

        salt-call django_build.additions "$(salt-call --out=json saltdjango.project demo)"
    """
    server = cfg["app_server"]
    # A kind from Debian (mod_wsgi) adds nothing to the virtualenv.
    found = [([server["module"]], f"{server['package']}=={server['version']}")] if server["package"] else []
    if (cfg.get("settings") or {}).get("wrapper", True):
        found += [(["psycopg", "psycopg2"], cfg["drivers"]["database"]), (["redis"], cfg["drivers"]["cache"])]
        # Only then: a project with local media keeps the virtualenv key it had.
        if (cfg.get("media") or {}).get("backend") == "s3":
            found += [(["storages"], cfg["drivers"]["storage"]), (["boto3"], cfg["drivers"]["s3"])]
    return found


def _requires_python_problem(release_dir: str, python: str, version: str) -> str | None:
    """Why the server's Python (``python``, at ``version``) cannot run the project (pyproject ``requires-python``), or None."""
    path = os.path.join(release_dir, "pyproject.toml")
    if not os.path.isfile(path):
        return None
    import tomllib

    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    with open(path, "rb") as handle:
        try:
            wanted = (tomllib.load(handle).get("project") or {}).get("requires-python")
        except tomllib.TOMLDecodeError as exc:
            return f"pyproject.toml is not valid TOML: {exc}"
    if not wanted:
        return None
    try:
        spec = SpecifierSet(str(wanted))
    except InvalidSpecifier:
        return f"pyproject.toml: requires-python {wanted!r} is not a version specifier"
    if version not in spec:
        return f"the project requires Python {wanted} (pyproject.toml), this server's Python is {version} ({python})"
    return None


def hook_argv(hook: dict[str, Any], manage_py: str, venv_python: str) -> list[str]:
    """The command line of a hook (see ``saltdjango.hook_command``) run in a release directory.

    CLI Example:

    .. code-block:: bash

        salt-call django_build.hook_argv '{manage: [compilemessages]}' manage.py /srv/demo/current/venv/bin/python
    """
    if "manage" in hook:
        return [venv_python, manage_py, *hook["manage"]]
    return ["./" + hook["run"][0] if "/" not in hook["run"][0] else hook["run"][0], *hook["run"][1:]]
