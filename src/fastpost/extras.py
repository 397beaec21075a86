"""Optional dependencies: a command that needs an extra says which, in one line.

`pip install fastpost` (and `make run`) installs what serving needs; `fastpost lab` and
`fastpost bench` need the `bench` extra. Without this check they died with a traceback on
the first import of a missing module.
"""

from __future__ import annotations

import importlib.util

import typer
from rich.console import Console
from rich.markup import escape

# What each extra brings that a command imports; checked by name, before anything imports.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "bench": ("psutil", "matplotlib", "httpx", "requests"),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of `extra` that this Python cannot import."""
    return [name for name in EXTRA_MODULES[extra] if importlib.util.find_spec(name) is None]


def require_extra(command: str, extra: str, console: Console) -> None:
    """Exit with status 2 and one line naming the extra when any of its modules is missing."""
    missing = missing_modules(extra)
    if missing:
        console.print(
            f"[red]`fastpost {command}` needs the {extra} extra[/red] (missing: "
            + escape(f"{', '.join(missing)}): .venv/bin/pip install -e '.[{extra}]'")
            + f", or `make {command}`",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
