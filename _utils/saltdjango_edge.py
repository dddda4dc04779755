"""What a project's edge sends and limits: the security headers of every
response and the rate limit of its login URLs. Pure rules, no Salt calls.

Whatever ends TLS sets them: Nginx on a single server, HAProxy on a load
balancer (and the app servers' Nginx behind it, for a request that reaches
one directly). Both templates read the same list from here, so that the
two can never disagree on a header. ``saltdjango`` reaches these functions
as ``__utils__["saltdjango_edge.<function>"]``.
"""

from __future__ import annotations

import re
from typing import Any

#: A CSP source or directive value: no quote that would end the header in a
#: template, no ";" or "," that would start another directive or policy.
_CSP_TOKEN = re.compile(r"^[A-Za-z0-9'*:/.+=_@{}\[\]?&%#~-]+$")
_CSP_DIRECTIVE = re.compile(r"^[a-z][a-z-]*$")
#: A Permissions-Policy: comma-separated ``feature=(allowlist)`` items.
_PERMISSIONS = re.compile(r'^[a-z-]+=\((?:[a-z"*:/. -]*)\)(?:, ?[a-z-]+=\((?:[a-z"*:/. -]*)\))*$')
#: A login path: absolute, no whitespace, no quote or brace (it lands in Nginx
#: and HAProxy configurations), no query string (neither matches on one).
_PATH = re.compile(r"^/[A-Za-z0-9._~!$&()*+,;=:@%/-]*$")


def csp_value(csp: dict[str, Any]) -> str:
    """The policy's header value: each directive (one set to false dropped) with its sources, in pillar order."""
    parts = []
    for directive, sources in (csp.get("policy") or {}).items():
        if sources is False:
            continue
        parts.append(" ".join([directive, *sources]) if sources else directive)
    return "; ".join(parts)


def headers(project: dict[str, Any], sandbox: bool = False) -> list[list[str]]:
    """The security headers of each response of ``project``, as ``[name, value]`` pairs.

    ``sandbox``: for the users' uploads (/media/), which must never run as
    our origin's active content: the policy is enforced with ``sandbox`` added
    (no script, no same-origin), whatever ``report_only`` says."""
    hsts = f"max-age={int(project.get('hsts_seconds') or 0)}; includeSubDomains"
    if project.get("hsts_preload", True):
        hsts += "; preload"
    found = [
        ["Strict-Transport-Security", hsts],
        ["X-Frame-Options", "DENY"],
        ["X-Content-Type-Options", "nosniff"],
        ["Referrer-Policy", "same-origin"],
        ["Cross-Origin-Opener-Policy", "same-origin"],
    ]
    if project.get("permissions_policy"):
        found.append(["Permissions-Policy", str(project["permissions_policy"])])
    csp = project.get("csp") or {}
    policy = csp_value(csp) if csp.get("enabled", True) else ""
    if sandbox:
        found.append(["Content-Security-Policy", f"{policy}; sandbox" if policy and not csp.get("report_only") else "sandbox"])
    elif policy:
        found.append(["Content-Security-Policy-Report-Only" if csp.get("report_only") else "Content-Security-Policy", policy])
    return found


#: The headers the edge owns: a copy from the app is hidden, so that each
#: response carries exactly one (both CSP names: the edge may send either).
OWNED_HEADERS = (
    "Strict-Transport-Security",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
    "Permissions-Policy",
    "Content-Security-Policy",
    "Content-Security-Policy-Report-Only",
)


def owned_headers() -> list[str]:
    """The header names that the edge sets and hides from the app (``OWNED_HEADERS``)."""
    return list(OWNED_HEADERS)


def _csp_problems(key: str, csp: Any) -> list[str]:
    if not isinstance(csp, dict):
        return [f"{key}: must be a mapping (enabled, report_only, policy)"]
    errors = [f"{key}:{k}: must be true or false" for k in ("enabled", "report_only") if k in csp and not isinstance(csp[k], bool)]
    errors += [f"{key}:{k}: unknown key (enabled, report_only, policy)" for k in csp if k not in ("enabled", "report_only", "policy")]
    policy = csp.get("policy", {})
    if not isinstance(policy, dict):
        return [*errors, f"{key}:policy: must map directives to lists of sources"]
    for directive, sources in policy.items():
        where = f"{key}:policy:{directive}"
        if not _CSP_DIRECTIVE.match(str(directive)):
            errors.append(f"{where}: not a CSP directive name")
        elif sources is not False and not (isinstance(sources, list) and all(isinstance(s, str) and _CSP_TOKEN.match(s) for s in sources)):
            errors.append(f"{where}: must be a list of sources (e.g. \"'self'\", https://cdn.example.com), or false to drop it")
    return errors


def _rate_limit_problems(key: str, limit: Any) -> list[str]:
    if not isinstance(limit, dict):
        return [f"{key}: must be a mapping (paths, per_minute)"]
    errors = [f"{key}:{k}: unknown key (paths, per_minute)" for k in limit if k not in ("paths", "per_minute")]
    per_minute = limit.get("per_minute", 1)
    if isinstance(per_minute, bool) or not isinstance(per_minute, int) or not 1 <= per_minute <= 6000:
        errors.append(f"{key}:per_minute: must be a whole number from 1 to 6000")
    paths = limit.get("paths", [])
    if not isinstance(paths, list):
        errors.append(f"{key}:paths: must be a list of URL paths (e.g. /admin/login/)")
    else:
        bad = [(i, p) for i, p in enumerate(paths) if not (isinstance(p, str) and _PATH.match(p))]
        errors += [f"{key}:paths:{i}: {p!r} is not a URL path (/..., no query string)" for i, p in bad]
    return errors


_ACME_KEYS = ("directory", "email", "eab_kid", "eab_hmac_key")
_URL = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/%-]*)?$")
_EMAIL = re.compile(r"^[^@\s'\"]+@[A-Za-z0-9.-]+$")
_EAB = re.compile(r"^[A-Za-z0-9_=-]+$")


def _acme_problems(key: str, tls: Any) -> list[str]:
    if not isinstance(tls, dict) or "acme" not in tls:
        return []
    acme = tls["acme"]
    if not isinstance(acme, dict):
        return [f"{key}: must be a mapping ({', '.join(_ACME_KEYS)})"]
    errors = [f"{key}:{k}: unknown key ({', '.join(_ACME_KEYS)})" for k in acme if k not in _ACME_KEYS]
    directory, email = acme.get("directory") or "", acme.get("email") or ""
    if directory and not (isinstance(directory, str) and _URL.match(directory)):
        errors.append(f"{key}:directory: must be the CA's https:// directory URL")
    if email and not (isinstance(email, str) and _EMAIL.match(email)):
        errors.append(f"{key}:email: {email!r} is not an e-mail address")
    kid, hmac = acme.get("eab_kid") or "", acme.get("eab_hmac_key") or ""
    if bool(kid) != bool(hmac):
        errors.append(f"{key}:eab_kid and eab_hmac_key: the CA's account binding needs both, or neither")
    bad = [k for k, v in (("eab_kid", kid), ("eab_hmac_key", hmac)) if v and not _EAB.match(str(v))]
    errors += [f"{key}:{k}: letters, digits, '-', '_' and '=' only" for k in bad]
    if directory and tls.get("certificate"):
        errors.append(f"{key}:directory: a project gets its certificate from pillar (tls:certificate) or from ACME, not both")
    return errors


def problems(key: str, project: dict[str, Any]) -> list[str]:
    """Errors in a project's edge settings (``hsts_seconds``, ``csp``, ``hsts_preload``,
    ``permissions_policy``, ``tls:acme``, ``login_rate_limit``), each naming its pillar key."""
    errors = []
    seconds = project.get("hsts_seconds", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
        errors.append(f"{key}:hsts_seconds: must be a whole number of seconds (0 or more)")
    if "csp" in project:
        errors += _csp_problems(f"{key}:csp", project["csp"])
    if "hsts_preload" in project and not isinstance(project["hsts_preload"], bool):
        errors.append(f"{key}:hsts_preload: must be true or false")
    policy = project.get("permissions_policy")
    if policy is not None and not (isinstance(policy, str) and (policy == "" or _PERMISSIONS.match(policy))):
        errors.append(f'{key}:permissions_policy: must read like camera=(), geolocation=(self "https://maps.example.com")')
    errors += _acme_problems(f"{key}:tls:acme", project.get("tls"))
    if "login_rate_limit" in project:
        errors += _rate_limit_problems(f"{key}:login_rate_limit", project["login_rate_limit"])
    return errors
