"""ASGI entry point (pillar app_server: {kind: uvicorn}): Django, and beside it
a websocket echo at /ws/echo/ in plain ASGI, which answers each message
with the release that echoed it."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

django_application = get_asgi_application()


async def echo(scope: dict, receive, send) -> None:
    release = os.environ.get("SALT_DJANGO_RELEASE", "development")
    while True:
        event = await receive()
        if event["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif event["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": f"{release}: {event.get('text') or ''}"})
        else:
            return


async def application(scope: dict, receive, send) -> None:
    if scope["type"] == "websocket":
        if scope["path"] == "/ws/echo/":
            await echo(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1000})
    else:
        await django_application(scope, receive, send)
