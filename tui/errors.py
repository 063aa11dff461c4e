"""How the CLI fails: one clear line on stderr and a meaningful exit code, never a traceback.

Exit codes: 0 success; 2 bad input (unknown preset, bad count, unwritable path, missing
device, unreadable or corrupt data set — also what Click uses for usage errors);
130 interrupted (Ctrl-C). Anything else escaping a command is a bug and shows its traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Bad input found by the CLI itself; the message is shown as is."""


def error_console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``diffbench: error: message`` as one line on stderr; return the Exit to raise."""
    from rich.markup import escape

    line = " ".join(str(message).split())
    error_console().print(f"[bold red]diffbench: error:[/] {escape(line)}")
    return typer.Exit(code)


def _describe(error: OSError) -> str:
    reason = error.strerror or str(error)
    return f"{reason}: {error.filename}" if error.filename else reason


@contextmanager
def user_errors(*domain: type[Exception]) -> Iterator[None]:
    """Turn ``UserError``, OS errors and the given domain errors into :func:`fail`.

    Commands import the engine lazily, so they pass the engine's error classes in
    (``PresetError``, ``DeviceError``, ``DatasetError``) once they have imported them.
    """
    try:
        yield
    except (UserError, *domain) as error:
        raise fail(str(error)) from None
    except OSError as error:
        raise fail(_describe(error)) from None


def require(ok: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``ok``."""
    if not ok:
        raise UserError(message)


def require_writable(folder: Path, target: str | Path | None = None) -> None:
    """`UserError` unless ``folder`` is, or can be made as, a folder this process writes
    in: its nearest existing ancestor (itself included) is a writable folder. ``target``
    (default ``folder``) is what the message says cannot be written."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    target = target or folder
    require(existing.is_dir(), f"cannot write {target}: {existing} is not a directory")
    require(os.access(existing, os.W_OK | os.X_OK),
            f"cannot write {target}: permission denied in {existing}")
