"""Render salt-django's state tree for one minion, the way ``salt-call --local``
would, without applying anything: every SLS of ``mods`` (``state.show_sls``),
then every Jinja template a ``file.managed`` state names, with the context
that state passes. Prints JSON: ``{"states": {id: "module.function"},
"templates": [source, ...], "errors": [...]}``.

Run by tests/unit/test_render.py in a subprocess (Salt's loader wants a
process of its own): ``python render_states.py <minion config> <mods> [<pillar JSON>]``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import salt.client
import salt.config


def _args(declaration: list[Any]) -> tuple[str, dict[str, Any]]:
    """(function, arguments) of one ``module: [args..., function]`` declaration."""
    function, args = "", {}
    for item in declaration:
        if isinstance(item, dict):
            args.update(item)
        else:
            function = str(item)
    return function, args


def main(config: str, mods: str, pillar: str | None = None) -> dict[str, Any]:
    # salt-django's own modules, from the tree's _modules/ and _states/, then a loader that has them.
    salt.client.Caller(mopts=salt.config.minion_config(config)).cmd("saltutil.sync_all")
    caller = salt.client.Caller(mopts=salt.config.minion_config(config))
    kwargs = {"pillar": json.loads(pillar)} if pillar else {}
    shown = caller.cmd("state.show_sls", mods, **kwargs)
    if not isinstance(shown, dict):
        return {"states": {}, "templates": [], "errors": shown if isinstance(shown, list) else [str(shown)]}
    states, templates, errors = {}, [], []
    for sid, body in sorted(shown.items()):
        for module, declaration in body.items():
            if module.startswith("__"):
                continue
            function, args = _args(declaration)
            states[sid] = f"{module}.{function}"
            if module != "file" or args.get("template") != "jinja":
                continue
            # ``names:`` entries may each bring their own source.
            sources = [args.get("source")] + [
                _args(v)[1].get("source") for n in args.get("names") or [] if isinstance(n, dict) for v in n.values()
            ]
            context = {**(args.get("defaults") or {}), **(args.get("context") or {})}
            for source in (s for s in sources if isinstance(s, str) and s.startswith("salt://")):
                try:
                    caller.cmd("file.apply_template_on_contents", caller.cmd("cp.get_file_str", source), "jinja", context, None, "base")
                    templates.append(source)
                except Exception as exc:  # noqa: BLE001 - any render failure is the finding
                    errors.append(f"{sid}: {source}: {exc}")
    return {"states": states, "templates": sorted(set(templates)), "errors": errors}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
