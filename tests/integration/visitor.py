"""A returning visitor of the demo: what a release must not break for them.

Run inside a single-server test host (against its own Nginx), or on this
machine against a cluster's load balancer (``--address``).

``login``: logs into Django's admin, takes a form's CSRF token and notes
the page's CSS and JS (URL and content), all into ``--state``. ``post``:
sends that form again and again, with the token taken before the release,
until a stop file appears, and prints a JSON summary (every note sent, the
answers' statuses and releases). ``check``: prints whether the session is
still logged in and what each noted asset answers now.

Stdlib only, so that the host's OS Python runs it.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import http.cookies
import json
import os
import re
import ssl
import sys
import time
import urllib.parse

ASSET = re.compile(r'(?:href|src)="(/static/[^"]+\.(?:css|js))"')
TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
RELEASE = re.compile(r"release (\S+)")


class Visitor:
    """One browser: its cookies, over HTTPS to ``address`` with Host ``host``."""

    def __init__(self, host: str, address: str, cookies: dict[str, str] | None = None) -> None:
        self.host = host
        self.address = address
        self.cookies = dict(cookies or {})
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE  # the lab's certificate is self-signed

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        conn = http.client.HTTPSConnection(self.address, 443, timeout=60, context=self.context)
        headers = {"Host": self.host, "Referer": f"https://{self.host}{path}"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
            for value in response.headers.get_all("Set-Cookie") or []:
                for name, morsel in http.cookies.SimpleCookie(value).items():
                    self.cookies[name] = morsel.value
            return response.status, text
        finally:
            conn.close()


def login(args: argparse.Namespace) -> dict:
    visitor = Visitor(args.host, args.address)
    status, text = visitor.request("GET", "/admin/login/")
    form = {"csrfmiddlewaretoken": TOKEN.search(text).group(1), "username": args.user, "password": args.password, "next": "/admin/"}
    status, text = visitor.request("POST", "/admin/login/", form)
    if status != 302 or "sessionid" not in visitor.cookies:
        raise SystemExit(f"login failed: HTTP {status}: {text[:300]}")
    _, note_page = visitor.request("GET", "/note/")
    _, page = visitor.request("GET", "/")
    assets = {}
    for url in ASSET.findall(page):
        asset_status, content = visitor.request("GET", url)
        assets[url] = {"status": asset_status, "content": content}
    state = {"cookies": visitor.cookies, "token": TOKEN.search(note_page).group(1), "assets": assets}
    with open(args.state, "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    return {"assets": {url: a["status"] for url, a in assets.items()}}


def post(args: argparse.Namespace) -> dict:
    with open(args.state, encoding="utf-8") as handle:
        state = json.load(handle)
    visitor = Visitor(args.host, args.address, state["cookies"])
    notes, failures, releases = [], collections.Counter(), collections.Counter()
    deadline = time.monotonic() + args.max_seconds
    while not os.path.exists(args.stop_file) and time.monotonic() < deadline:
        note = f"{args.prefix}-{len(notes)}"
        notes.append(note)
        try:
            status, text = visitor.request("POST", "/note/", {"csrfmiddlewaretoken": state["token"], "note": note})
        except OSError as exc:
            failures[type(exc).__name__] += 1
            continue
        if status != 200 or not text.startswith(f"saved {note} "):
            failures[f"HTTP {status}: {text[:120]}"] += 1
        found = RELEASE.search(text)
        releases[found.group(1) if found else "?"] += 1
        time.sleep(args.pause)
    return {"sent": len(notes), "failed": sum(failures.values()), "failures": failures, "releases": releases, "notes": notes}


def check(args: argparse.Namespace) -> dict:
    with open(args.state, encoding="utf-8") as handle:
        state = json.load(handle)
    visitor = Visitor(args.host, args.address, state["cookies"])
    status, text = visitor.request("GET", "/admin/")
    assets = {}
    for url, before in state["assets"].items():
        now_status, content = visitor.request("GET", url)
        assets[url] = {"status": now_status, "same": content == before["content"]}
    _, page = visitor.request("GET", "/")
    logged_in = status == 200 and "Site administration" in text
    return {"logged_in": logged_in, "admin_status": status, "assets": assets, "page_assets": ASSET.findall(page)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--address", default="127.0.0.1")
    sub = parser.add_subparsers(dest="command", required=True)
    login_parser = sub.add_parser("login")
    login_parser.add_argument("--user", required=True)
    login_parser.add_argument("--password", required=True)
    post_parser = sub.add_parser("post")
    post_parser.add_argument("--stop-file", required=True)
    post_parser.add_argument("--prefix", required=True)
    post_parser.add_argument("--max-seconds", type=float, default=300)
    post_parser.add_argument("--pause", type=float, default=0.02)
    sub.add_parser("check")
    args = parser.parse_args()
    json.dump({"login": login, "post": post, "check": check}[args.command](args), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
