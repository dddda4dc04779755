"""How every benchmark reports: figures printed as aligned lines, and the
same lines (plus JSON) written to bench/reports/<name>.md."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

REPORTS = Path(__file__).resolve().parent / "reports"


def report(name: str, title: str, setting: str, figures: dict[str, float | int | str]) -> Path:
    """Print ``figures`` and write them to ``reports/<name>.md``; ``setting``
    says what was measured on (it follows "Measured <when> on <n> cores")."""
    width = max(map(len, figures))
    lines = [f"{key.ljust(width)}  {value}" for key, value in figures.items()]
    print("\n".join(lines))
    path = REPORTS / f"{name}.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f"# {title}\n\n"
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores{setting}.\n\n```\n"
        + "\n".join(lines)
        + "\n```\n\n```json\n"
        + json.dumps(figures, indent=2)
        + "\n```\n"
    )
    print(f"report: {path}")
    return path
