"""Partition 0, trained once: a content-addressed cache of the model after partition 0.

Partition 0 is SMIR's random warm-up for every strategy, with its own masks
(`pretrain.warmup_masks`: ratio, patch size, fill), so trials that share the data, the model,
the pretraining settings and the repeat seed train the same partition-0 model, bit for bit,
whatever the searched `masking.*` keys are: a sweep stores one entry per repeat seed. The first
such trial stores what partition 0 leaves behind (weights, optimizer state, torch's random
state, the partition's loss and seconds) under a key made of everything that determines it;
the others start from there at partition 1 and end with the same weights as without the cache
(tests/test_partition0.py).

An entry is written under a temporary name and renamed into place, so a reader sees a whole entry
or none, and a kill during the write leaves only a temporary folder that nothing reads. Trials
that miss at the same time each train partition 0 and try to store it: the first rename wins, the
others drop their copy. Entries are read with `torch.load(weights_only=True)`, once their seal
(`integrity`) says they are whole; a damaged entry is a miss, trained again and replaced. A hit
touches its entry's folder, so its modification time says when it was last used: `listed` and
`prune` (`python -m smsweep cache`) read it; `prune` moves an entry aside (atomically) before
deleting it, so a trial reading it then gets a miss, never half an entry.

Only single-worker trials use the cache (with DDP every rank has its own random state).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smsweep import faults
from smsweep.spec.config import SweepSpec
from smsweep.trial import integrity

# torch is imported where it is used: the sweep's driver names the cache folder without it.

CACHE_DIR = "partition0"  # under the sweep's storage, shared by its sweeps
STATE, META = "state.pt", "meta.json"


def key(spec: SweepSpec, seed: int, precision: str, device: str) -> str:
    """The digest of everything partition 0's model depends on: the data and its split (`data`,
    `seed`), the repeat seed `seed` of weights and masks, the model, all of `pretrain` (the
    learning-rate schedule spans every partition; `warmup_masks`, partition 0's masks and fill,
    are in it), the precision and device it trains in, and the code's versions. Of `masking`
    only what shapes the model or partition 0's steps: where the mask token sits (`token_stage`,
    or the input with `fill: token`), and, for the contrastive objective's hard negatives (drawn
    in partition 0 too), `patch_size` and `largest_component`. The searched ratio, patch size,
    fill, strategy, samples or refresh are not in it: partition 0 reads none of them."""
    import torch

    from smsweep import __version__
    from smsweep.method.build import mask_stage

    masking, pretrain = spec.masking, spec.pretrain
    hard = pretrain.objective == "contrastive" and pretrain.contrastive.hard_negatives
    view = {
        "data": spec.data.model_dump(mode="json"),
        "split_seed": spec.seed,
        "seed": seed,
        "model": spec.model.model_dump(mode="json"),
        "pretrain": pretrain.model_dump(mode="json"),
        "mask_token_stage": mask_stage(spec),
        "hard_negatives": [masking.patch_size, masking.largest_component] if hard else None,
        "precision": precision,
        "device": device,
        "versions": [__version__, torch.__version__],
    }
    text = json.dumps(view, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Entry:
    state: dict[str, Any]  # model, optimizer, torch_rng
    losses: dict[str, float]  # the partition's reported loss, e.g. {"recon_loss": 0.41}
    seconds: float  # what training partition 0 took the trial that stored it


def load(cache: Path, name: str) -> Entry | None:
    """The entry `name`, or None when there is none (or it cannot be read)."""
    import torch

    entry = cache / name
    if not entry.is_dir():
        return None
    damaged = integrity.damaged(entry, (STATE, META))
    if damaged:
        integrity.warn(damaged, "a miss: partition 0 is trained again and the entry replaced")
        return None
    try:
        meta = json.loads((entry / META).read_text())
        state = torch.load(entry / STATE, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError):
        return None
    with contextlib.suppress(OSError):  # last used: now (a read-only cache still serves)
        os.utime(entry)
    return Entry(state, dict(meta["losses"]), float(meta["seconds"]))


def store(cache: Path, name: str, entry: Entry) -> bool:
    """Store `entry` as `name` unless it is there already; True when this call stored it."""
    import torch

    target = cache / name
    replaced = target.is_dir() and bool(integrity.damaged(target, (STATE, META)))
    if target.is_dir() and not replaced:
        return False
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".writing-", dir=cache))
    aside = None
    try:
        torch.save(entry.state, staging / STATE)
        meta = {"losses": entry.losses, "seconds": entry.seconds}
        (staging / META).write_text(json.dumps(meta))
        integrity.seal(staging, (STATE, META))
        faults.pause_for_a_kill("partition0:store")
        if replaced:  # a damaged entry moves aside (atomic), so the rename below can land
            aside = Path(tempfile.mkdtemp(prefix=".damaged-", dir=cache)) / name
            os.rename(target, aside)
        os.rename(staging, target)  # atomic; fails when another trial stored it first
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside.parent, ignore_errors=True)


class CachedPartition:
    """One trial's partition 0 in the cache at `cache` (a folder): `restore` it into the model
    and optimizer (and torch's random state) when it is there, `save` it after training it."""

    def __init__(
        self, cache: str | Path, spec: SweepSpec, seed: int, precision: str, device: str
    ) -> None:
        self.cache = Path(cache)
        self.name = key(spec, seed, precision, device)

    def restore(self, model, optimizer) -> dict[str, Any] | None:
        """Partition 0's metrics (its loss, the hit, the seconds saved) after loading it; None
        on a miss."""
        import torch

        entry = load(self.cache, self.name)
        if entry is None:
            return None
        model.load_state_dict(entry.state["model"])
        optimizer.load_state_dict(entry.state["optimizer"])
        torch.set_rng_state(entry.state["torch_rng"])
        return {
            **entry.losses,
            "partition0_cache_hit": 1,
            "partition0_saved_seconds": entry.seconds,
        }

    def save(self, model, optimizer, losses: dict[str, float], seconds: float) -> bool:
        """Store partition 0 as training left it; `losses`: what the partition reported."""
        import torch

        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        return store(self.cache, self.name, Entry(state, dict(losses), seconds))


@dataclass(frozen=True)
class Listed:
    """One entry as `listed` finds it."""

    name: str  # its key
    size: int  # bytes on disk
    stored: float  # when it was stored (epoch seconds: its state file's modification time)
    used: float  # when it was last stored or loaded (its folder's modification time)


def listed(cache: Path) -> list[Listed]:
    """The whole-named entries of the cache folder `cache`, the most recently used first (no
    folder: none). Temporary folders (a write cut short, an entry moved aside) are not listed."""
    cache = Path(cache)
    if not cache.is_dir():
        return []
    found = []
    for entry in cache.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            size = sum(path.stat().st_size for path in entry.rglob("*") if path.is_file())
            state = entry / STATE
            stored = state.stat().st_mtime if state.is_file() else entry.stat().st_mtime
            found.append(Listed(entry.name, size, stored, entry.stat().st_mtime))
        except OSError:  # pruned or replaced meanwhile
            continue
    return sorted(found, key=lambda e: e.used, reverse=True)


TEMPORARY_GRACE = 3600.0  # seconds: a temporary folder younger than this may be a write under way


def prune(cache: Path, unused_for: float | None, now: float) -> list[Listed]:
    """Delete the entries not used for `unused_for` seconds before `now` (None: every entry),
    and the temporary folders older than that (at least `TEMPORARY_GRACE`: a younger one may be
    another trial's write); returns the entries deleted. Each entry is renamed aside first
    (atomic), so a trial that reads it at the same time loads all of it or misses."""
    cache = Path(cache)
    threshold = 0.0 if unused_for is None else unused_for
    pruned = []
    for entry in listed(cache):
        with contextlib.suppress(OSError):  # used since it was listed: kept
            unused = now - (cache / entry.name).stat().st_mtime >= threshold
            if unused and _delete(cache / entry.name, cache):
                pruned.append(entry)
    if cache.is_dir():
        for temporary in cache.glob(".*"):
            with contextlib.suppress(OSError):
                if now - temporary.stat().st_mtime >= max(threshold, TEMPORARY_GRACE):
                    shutil.rmtree(temporary)
    return pruned


def _delete(entry: Path, cache: Path) -> bool:
    """Move `entry` aside, then delete it; False when it is gone already (another prune)."""
    aside = Path(tempfile.mkdtemp(prefix=".pruning-", dir=cache))
    try:
        os.rename(entry, aside / entry.name)
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(aside, ignore_errors=True)
