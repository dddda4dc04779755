"""A project's certificate from an ACME CA (Let's Encrypt, or any other), by certbot.

certbot does the protocol, keeps the lineage in /etc/letsencrypt and renews
it from Debian's timer (or cron where PID 1 is not systemd). Its deploy hook
(salt/tls/files/acme-deployed.jinja) copies a new certificate to where Nginx
or HAProxy reads it and reloads that server: it runs only when a certificate
was issued or renewed, so a renewal that is not due changes nothing, and a
failed one keeps the previous certificate. This state asks for a
certificate only when the lineage is missing or names other domains or
another CA, and reports certbot's own reason when the CA says no.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

__virtualname__ = "salt_django_acme"

CERTBOT = "/usr/bin/certbot"
LETSENCRYPT = "/etc/letsencrypt"


def __virtual__() -> str:
    """Always loadable: salt/tls installs certbot in the run that first uses this state."""
    return __virtualname__


def _ret(name: str, result: bool | None, comment: str, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "result": result, "changes": changes or {}, "comment": comment}


def _read(path: str) -> str:
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as held:
        return held.read()


def _lineage(name: str) -> dict[str, Any]:
    """What certbot holds for ``name``: its CA (``server``), the names the
    certificate covers and its SHA-256 fingerprint; empty when there is none."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    renewal = _read(f"{LETSENCRYPT}/renewal/{name}.conf")
    pem = _read(f"{LETSENCRYPT}/live/{name}/cert.pem")
    if not renewal or not pem:
        return {}
    server = next((line.split("=", 1)[1].strip() for line in renewal.splitlines() if line.split("=", 1)[0].strip() == "server"), "")
    cert = x509.load_pem_x509_certificate(pem.encode())
    try:
        names = sorted(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = []
    return {"server": server, "domains": names, "fingerprint": cert.fingerprint(hashes.SHA256()).hex(":")}


def _run(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    return __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True, env=env or {})  # noqa: F821


def certificate(
    name: str,
    domains: list[str],
    directory: str,
    deploy_hook: str,
    served: str,
    email: str = "",
    eab_kid: str = "",
    eab_hmac_key_pillar: str = "",
    webroot: str = "",
    listener_port: int = 0,
) -> dict[str, Any]:
    """certbot holds a certificate ``name`` for exactly ``domains`` from
    ``directory``, and ``served`` (the file Nginx or HAProxy reads) is its chain.

    The challenge (HTTP-01) is answered by files under ``webroot`` (Nginx
    serves them on port 80) or, without a webroot, by certbot's own listener
    on 127.0.0.1:``listener_port`` (HAProxy routes the challenge path there).
    The EAB key is read from pillar by key, never passed in: it stays out of
    the rendered SLS, the state's output and certbot's command line.
    """
    wanted = sorted(domains)
    held = _lineage(name) if os.path.exists(CERTBOT) else {}
    if held and held["server"] == directory and held["domains"] == wanted:
        chain = _read(f"{LETSENCRYPT}/live/{name}/fullchain.pem")
        if _read(served) == chain:
            return _ret(name, True, f"certificate {held['fingerprint'][:23]}... for {', '.join(wanted)} from {directory} is served")
        changes = {"served": {"old": "another certificate", "new": held["fingerprint"]}}
        if __opts__["test"]:  # noqa: F821
            return _ret(name, None, f"{served} would get the certificate certbot holds", changes)
        hooked = _run([deploy_hook, name], env={"RENEWED_LINEAGE": f"{LETSENCRYPT}/live/{name}"})
        if hooked["retcode"] != 0:
            return _ret(name, False, f"deploy hook failed: {(hooked['stderr'] or hooked['stdout']).strip()[-800:]}")
        return _ret(name, True, f"{served} now serves the certificate certbot holds", changes)
    reason = "no certificate yet" if not held else f"certbot's certificate is for {', '.join(held['domains'])} from {held['server']}"
    changes = {"certificate": {"old": held.get("fingerprint"), "new": f"{', '.join(wanted)} from {directory}"}}
    if __opts__["test"]:  # noqa: F821
        return _ret(name, None, f"a certificate would be requested ({reason})", changes)
    if not os.path.exists(CERTBOT):
        return _ret(name, False, f"{CERTBOT} is missing (Debian's certbot package)")
    argv = [CERTBOT, "certonly", "--non-interactive", "--agree-tos", "--no-eff-email", "--cert-name", name]
    argv += ["--server", directory, "--key-type", "ecdsa", "--elliptic-curve", "secp256r1", "--deploy-hook", f"{deploy_hook} {name}"]
    argv += ["--email", email] if email else ["--register-unsafely-without-email"]
    if webroot:
        argv += ["--webroot", "--webroot-path", webroot]
    else:
        argv += ["--standalone", "--http-01-address", "127.0.0.1", "--http-01-port", str(listener_port)]
    for domain in wanted:
        argv += ["-d", domain]
    with tempfile.NamedTemporaryFile("w", prefix="salt-django-acme-", suffix=".ini") as config:
        os.chmod(config.name, 0o600)
        if eab_kid:
            config.write(f"eab-kid = {eab_kid}\neab-hmac-key = {__salt__['pillar.get'](eab_hmac_key_pillar)}\n")  # noqa: F821
            config.flush()
            argv += ["--config", config.name]
        done = _run(argv)
    if done["retcode"] != 0:
        said = "\n".join(line for line in (done["stdout"] + "\n" + done["stderr"]).splitlines() if line.strip())
        kept = f"; the served certificate stays {held['fingerprint'][:23]}..." if held else "; the server keeps its self-signed one"
        return _ret(name, False, f"certbot could not get a certificate for {', '.join(wanted)}{kept}: {said[-1200:]}")
    now = _lineage(name)
    changes["certificate"]["new"] = now.get("fingerprint")
    return _ret(name, True, f"certificate {now.get('fingerprint', '?')[:23]}... issued for {', '.join(wanted)} by {directory}", changes)
