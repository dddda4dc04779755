"""The ASGI application salt-django serves (``app_server: {kind: uvicorn}``):
the project's own, with ``/healthz`` first, and websockets that a retiring
slot closes with 1001 (going away).

``/healthz`` is the WSGI entry point's (``salt_django_wsgi.health``), run
in a thread: the same checks whichever kind serves. Every other request
goes to the project's ASGI application (``SALT_DJANGO_ASGI``, e.g.
``mysite.asgi:application``) untouched.

A switch (``_modules/app_slots.py``) leaves the old slot's websockets open
for ``app_server:drain_timeout`` seconds, then creates the file named by
``SALT_DJANGO_DRAIN_FILE``: each websocket still open on this slot is then
closed with code 1001, and its application receives a disconnect, before
the slot is stopped. Uvicorn's own shutdown would close them with 1012.
"""

import asyncio
import importlib
import json
import os
import sys

import salt_django_wsgi
from asgiref.sync import sync_to_async

_module, _, _attribute = os.environ["SALT_DJANGO_ASGI"].partition(":")
project_application = getattr(importlib.import_module(_module), _attribute or "application")

DRAIN_FILE = os.environ.get("SALT_DJANGO_DRAIN_FILE", "")
GOING_AWAY = 1001
_drained: asyncio.Event | None = None


async def _watch_drain(event: asyncio.Event) -> None:
    while not os.path.exists(DRAIN_FILE):
        await asyncio.sleep(0.5)
    event.set()


def _drain_event() -> asyncio.Event:
    """Set once the drain file exists; one watcher per worker process."""
    global _drained
    if _drained is None:
        _drained = asyncio.Event()
        if DRAIN_FILE:
            asyncio.get_running_loop().create_task(_watch_drain(_drained))
    return _drained


async def _websocket(scope: dict, receive, send) -> None:
    """The project's websocket, closed with 1001 once this slot drains."""
    drained = _drain_event()
    closed = False

    async def guarded_send(message: dict) -> None:
        nonlocal closed
        if not closed:
            closed = message["type"] == "websocket.close"
            await send(message)

    async def guarded_receive() -> dict:
        nonlocal closed
        incoming = asyncio.ensure_future(receive())
        waiting = asyncio.ensure_future(drained.wait())
        done, _ = await asyncio.wait({incoming, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if incoming in done:
            waiting.cancel()
            return incoming.result()
        incoming.cancel()
        if not closed:
            closed = True
            await send({"type": "websocket.close", "code": GOING_AWAY})
        return {"type": "websocket.disconnect", "code": GOING_AWAY}

    await project_application(scope, guarded_receive, guarded_send)


async def _health(scope: dict, send) -> None:
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
    host = headers.get("host", "localhost")
    environ = {
        "SERVER_NAME": host.split(":")[0],
        "SERVER_PORT": "443",
        "SCRIPT_NAME": "",
        "HTTP_HOST": host,
        "wsgi.errors": sys.stderr,
    }
    status, body = await sync_to_async(salt_django_wsgi.health, thread_sensitive=False)(environ)
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def application(scope: dict, receive, send) -> None:
    if scope["type"] == "http" and scope.get("path") == salt_django_wsgi.HEALTH_PATH:
        await _health(scope, send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)
    else:
        await project_application(scope, receive, send)
