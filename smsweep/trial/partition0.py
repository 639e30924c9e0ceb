"""Partition 0, trained once: a content-addressed cache of the model after partition 0.

Partition 0 is random masking for every strategy (SMIR's warm-up), so trials that share the data,
the model, the pretraining settings, the repeat seed, the masking ratio, patch size and fill train
the same partition-0 model, bit for bit. The first such trial stores what partition 0 leaves
behind (weights, optimizer state, torch's random state, the partition's loss and seconds) under a
key made of everything that determines it; the others start from there at partition 1 and end
with the same weights as without the cache (tests/test_partition0.py).

An entry is written under a temporary name and renamed into place, so a reader sees a whole entry
or none, and a kill during the write leaves only a temporary folder that nothing reads. Trials
that miss at the same time each train partition 0 and try to store it: the first rename wins, the
others drop their copy. Entries are read with `torch.load(weights_only=True)`, once their seal
(`integrity`) says they are whole; a damaged entry is a miss, trained again and replaced.

Only single-worker trials use the cache (with DDP every rank has its own random state).
"""

from __future__ import annotations

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


def key(spec: SweepSpec, seed: int, precision: str, device: str, patch_sizes: list[int]) -> str:
    """The digest of everything partition 0's model depends on: the data and its split (`data`,
    `seed`), the repeat seed `seed` of weights and masks, the model, all of `pretrain` (the
    learning-rate schedule spans every partition), the warm-up masks (ratio, patch size, fill,
    token stage), the precision and device it trains in, the mask token's patch sizes (the
    model's shape), and the code's versions."""
    import torch

    from smsweep import __version__

    masking = spec.masking
    view = {
        "data": spec.data.model_dump(mode="json"),
        "split_seed": spec.seed,
        "seed": seed,
        "model": spec.model.model_dump(mode="json"),
        "pretrain": spec.pretrain.model_dump(mode="json"),
        "masks": [masking.ratio, masking.patch_size, masking.fill, masking.token_stage],
        "token_patch_sizes": patch_sizes,
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
        from smsweep.method.build import masking_strategy

        self.cache = Path(cache)
        patch_sizes = [size for size, _ in masking_strategy(spec).configs]
        self.name = key(spec, seed, precision, device, patch_sizes)

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
