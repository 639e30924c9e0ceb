"""Errors that the CLI turns into exit codes.

`SpecError` is invalid user input (the spec, the data, the resources asked for): the CLI prints its
message, writes nothing and exits 2. Its message must say what is wrong *and* how to fix it.
"""

from __future__ import annotations

from typing import Any


class SpecError(ValueError):
    """Invalid input from the user. The message names the problem and the fix."""


class TrackingUnavailable(RuntimeError):
    """The MLflow store stopped answering, for longer than its client retries, while a sweep ran:
    a runtime failure (exit 1). The message names the store and how to continue the sweep."""


def first_line(message: Any) -> str:
    """The first line of an error or message (its type's name when it says nothing), for a
    one-line reason."""
    text = str(message).strip()
    return text.splitlines()[0] if text else type(message).__name__


def one_line(error: BaseException) -> str:
    """A failed trial's reason in one line: the innermost cause that Ray (RayTaskError.cause)
    or the trial (TrialFailed.cause) carries, as `Type: first line`."""
    seen = {id(error)}
    while isinstance(getattr(error, "cause", None), BaseException) and id(error.cause) not in seen:
        error = error.cause
        seen.add(id(error))
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")[:200]
