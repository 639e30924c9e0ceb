"""`python -m smsweep cache list|prune STORAGE`: what the partition-0 cache of a sweep storage
holds, and deleting the entries no sweep has used for a while.

The cache (`STORAGE/partition0/`, see `trial.partition0`) is shared by every sweep in STORAGE,
including sweeps running now: `prune --keep-days N` deletes only entries unused for N days, and
an entry a trial is reading while it is deleted is a miss for that trial, not an error.
"""

from __future__ import annotations

import time
from pathlib import Path

from smsweep.engines.settings import SETTINGS_FILE
from smsweep.errors import SpecError
from smsweep.trial import partition0

DAY = 86400.0


def cache_folder(storage: str) -> Path:
    """The partition-0 cache of the sweep storage `storage` (or `storage` itself when it is the
    cache folder); SpecError when `storage` is not a local directory or is a sweep's own
    experiment directory."""
    if "://" in storage:
        raise SpecError(
            f"{storage} is an object store: sweeps there do not cache partition 0 (an entry "
            "cannot be renamed into place atomically), so there is nothing to list or prune"
        )
    path = Path(storage)
    if not path.is_dir():
        raise SpecError(
            f"{storage} is not a directory: give the sweep storage that holds partition0/ "
            "(run's --storage, default smsweep_runs)"
        )
    if path.name == partition0.CACHE_DIR:
        return path
    if (path / SETTINGS_FILE).is_file():
        raise SpecError(
            f"{storage} is one sweep's experiment directory (STORAGE/NAME); the cache is shared "
            f"by the sweeps of its storage: give {path.resolve().parent}"
        )
    return path / partition0.CACHE_DIR


def list_command(storage: str, now: float | None = None) -> str:
    """The entries of the cache under `storage`: key, size, age, last use."""
    folder = cache_folder(storage)
    now = time.time() if now is None else now
    entries = partition0.listed(folder)
    total = sum(entry.size for entry in entries)
    lines = [f"partition-0 cache {folder}: {_count(entries)}, {_megabytes(total)}"]
    if entries:
        lines.append(f"{'key':<32}  {'size':>9}  {'age':>7}  {'last used':>9}")
        lines += [
            f"{entry.name:<32}  {_megabytes(entry.size):>9}  {_ago(now - entry.stored):>7}  "
            f"{_ago(now - entry.used):>9}"
            for entry in entries
        ]
    return "\n".join(lines)


def prune_command(
    storage: str, keep_days: float | None, *, everything: bool = False, now: float | None = None
) -> str:
    """Delete the entries unused for `keep_days` days (`everything`: all of them); says what
    went and what is left."""
    if keep_days is None and not everything:
        raise SpecError("say what to prune: --keep-days N (entries unused for N days) or --all")
    folder = cache_folder(storage)
    now = time.time() if now is None else now
    unused_for = None if everything else keep_days * DAY
    pruned = partition0.prune(folder, unused_for, now)
    left = partition0.listed(folder)
    which = "every entry" if everything else f"entries unused for {keep_days:g} days"
    return (
        f"pruned {_count(pruned)} ({_megabytes(sum(e.size for e in pruned))}) of {folder}: "
        f"{which}; {len(left)} left ({_megabytes(sum(e.size for e in left))})"
    )


def _count(entries: list) -> str:
    return f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, length in (("d", DAY), ("h", 3600.0), ("min", 60.0)):
        if seconds >= length:
            return f"{seconds / length:.1f} {unit}"
    return f"{seconds:.0f} s"
