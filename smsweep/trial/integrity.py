"""Whole files or none: checkpoints and partition-0 cache entries carry a seal, written last.

A node lost while writing, or a full disk, leaves a file cut short; `torch.load` of half a file
fails (or worse, loads). Each checkpoint directory and cache entry gets SEAL_FILE once its files
are written: their SHA-256 digests. A reader checks them (`damaged`) and refuses what does not
match: a damaged checkpoint sends its trial back to the start (Ray Train hands a restarted trial
its latest checkpoint only), a damaged cache entry is a miss that is trained again and replaced.

A trial that starts again after a damaged checkpoint must not log to MLflow what it logged
before: `Position` orders its reports, and those up to the damaged checkpoint's last report (from
its META file, when that one is whole) are replayed, not logged.

`scan`, run by `resume` before anything starts, names every damaged file in the console (the
trials' own processes do not print to it).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SEAL_FILE = "sealed.json"  # {file name: sha256}, written last into a checkpoint or cache entry
Position = tuple[int, int]  # (0, partition) while pretraining, (1, evaluation) fine-tuning


def seal(directory: Path, names: Iterable[str]) -> None:
    """Record the digests of `names` in `directory`, last and atomically."""
    digests = {name: _digest(directory / name) for name in names}
    staging = directory / f".{SEAL_FILE}.writing"
    staging.write_text(json.dumps(digests))
    os.replace(staging, directory / SEAL_FILE)


def damaged(directory: Path, names: Iterable[str]) -> list[Path]:
    """The files of `directory` among `names` that are not whole: missing, or not what the seal
    recorded. A directory sealed before seals existed has none: its torch files must then at
    least be complete zip archives (cutting one short loses the index at its end)."""
    directory = Path(directory)
    try:
        recorded: dict[str, str] | None = json.loads((directory / SEAL_FILE).read_text())
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError):
        return [directory / SEAL_FILE]  # the seal itself is cut short: trust nothing here
    bad = []
    for name in names:
        path = directory / name
        if not path.is_file():
            bad.append(path)
        elif recorded is None:
            if name.endswith(".pt") and not zipfile.is_zipfile(path):
                bad.append(path)
        elif recorded.get(name) != _digest(path):
            bad.append(path)
    return bad


def warn(paths: Iterable[Path], consequence: str) -> None:
    """A warning that names each damaged file (in the process that found it)."""
    for path in paths:
        warnings.warn(f"damaged file {path}: {consequence}", RuntimeWarning, stacklevel=2)


def position(report: dict[str, Any]) -> Position:
    """Where a report of the training loop (its flat dict) falls in the trial."""
    if report.get("phase") == "pretrain":
        return (0, int(report["partition"]))
    return (1, int(report["epoch"]))


def logged_through(meta: Path) -> Position | None:
    """The position of the last report a checkpoint's META file holds, when the file is whole
    (those reports reached MLflow); None when it cannot be read."""
    try:
        return position(json.loads(Path(meta).read_text())["metrics"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def scan(experiment_dir: Path, cache: Path | None, echo: Callable[[str], None]) -> int:
    """Name in the console every damaged checkpoint, cache entry and result file of a sweep on
    a filesystem, with what follows for each; returns how many."""
    found = 0
    for run_dir in sorted(Path(experiment_dir).glob("train/*/")):
        finished = _whole_result(run_dir / "result.json")
        if finished is False:
            echo(
                f"warning: damaged file {run_dir / 'result.json'}: its trial's last checkpoint "
                "is used instead"
            )
            found += 1
        # our own files, wherever Train or the in-process session put their folders; the
        # order they were written in (the last one is what the trial would resume from)
        states = sorted(run_dir.glob("**/state.pt"), key=lambda path: path.stat().st_mtime)
        for state in states:
            if finished:
                what = "not read: its trial has finished"
            elif state == states[-1]:
                what = "its trial starts again from the beginning"
            else:
                what = "an older checkpoint, not read"
            for path in damaged(state.parent, (state.name, "meta.json")):
                echo(f"warning: damaged file {path}: {what}")
                found += 1
    if cache is not None and cache.is_dir():
        for entry in sorted(cache.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                for path in damaged(entry, ("state.pt", "meta.json")):
                    echo(
                        f"warning: damaged file {path}: this partition-0 cache entry is "
                        "trained again and replaced"
                    )
                    found += 1
    return found


def _whole_result(path: Path) -> bool | None:
    """Whether a trial's result file is whole; None when there is none."""
    try:
        json.loads(path.read_text())["metrics"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _digest(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
