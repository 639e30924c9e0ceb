"""How the bench times: alternating rounds (`time_rounds`, `Rounds`), the CPU time of the timed
sections (`CpuMeter`), the precision and layout both sides of a ratio run in (`choose_precision`,
picking a `smsweep.method.precision.Precision`, the same one trials run in), and the small
helpers for progress, device syncs and torch's threads.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

from smsweep.bench.inputs import Sizes, bench_images, bench_model
from smsweep.method.precision import Precision


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Rounds:
    """Seconds of each timed function, one entry per round."""

    seconds: Mapping[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median over rounds of the ratio within each round: load that comes and goes between
        rounds cancels out."""
        pairs = zip(self.seconds[numerator], self.seconds[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)


def time_rounds(
    functions: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    device: torch.device,
    warmup: int = 1,
) -> Rounds:
    """Time each function once per round for `repeats` rounds, after `warmup` untimed rounds.
    The order alternates (A B C, C B A, ...) so that a machine slowing down or speeding up
    within a round does not favour whichever runs first."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    _sync(device)
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    order = list(functions)
    for round_index in range(repeats):
        for name in order if round_index % 2 == 0 else reversed(order):
            start = time.perf_counter()
            functions[name]()
            _sync(device)
            seconds[name].append(time.perf_counter() - start)
    return Rounds(seconds)


class CpuMeter:
    """CPU time while timed sections run, from /proc (Linux; elsewhere every figure is None).

    `busy(pids)`: CPUs the given processes kept busy on average (1.0 = one full CPU);
    `others()`: CPUs everything not tracked kept busy (other work on the machine, Ray's own
    processes): the contention the timings saw. Enter it once per section; it sums them.
    """

    def __init__(self, pids: list[int] | None = None) -> None:
        self.pids = pids or [os.getpid()]
        self.wall = 0.0
        self.system = 0.0
        self.per_pid = [0.0] * len(self.pids)
        self.ok = True

    def _snapshot(self) -> tuple[float, float, list[float]] | None:
        try:
            ticks = os.sysconf("SC_CLK_TCK")
            with open("/proc/stat") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
            system = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # all but idle, iowait
            processes = []
            for pid in self.pids:
                with open(f"/proc/{pid}/stat") as stat:
                    after_name = stat.read().rsplit(")", 1)[1].split()
                processes.append((int(after_name[11]) + int(after_name[12])) / ticks)
        except (OSError, ValueError, IndexError, AttributeError):
            return None
        return time.perf_counter(), system, processes

    def __enter__(self) -> CpuMeter:
        self._start = self._snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._snapshot()
        if self._start is None or end is None:
            self.ok = False
            return
        self.wall += end[0] - self._start[0]
        self.system += end[1] - self._start[1]
        for index, (before, after) in enumerate(zip(self._start[2], end[2], strict=True)):
            self.per_pid[index] += after - before

    def cpu_seconds(self, pids: list[int]) -> float:
        """CPU seconds the given (tracked) processes used inside the sections."""
        return sum(self.per_pid[self.pids.index(pid)] for pid in pids)

    def other_seconds(self) -> float:
        """CPU seconds everything untracked used inside the sections."""
        return max(self.system - sum(self.per_pid), 0.0)

    def busy(self, pids: list[int]) -> float | None:
        if not self.ok or not self.wall:
            return None
        return round(self.cpu_seconds(pids) / self.wall, 2)

    def others(self) -> float | None:
        if not self.ok or not self.wall:
            return None
        return round(self.other_seconds() / self.wall, 2)


def choose_precision(sizes: Sizes, device: torch.device, *, train: bool) -> Precision:
    """On the CPU: float32 in the layout of `sizes.channels_last`, as a trial runs. On CUDA, the
    fastest of float32 / bf16 autocast x contiguous / channels_last for this model (forward
    only, or forward+backward with `train`); an option is kept only when it is at least 5%
    faster than plain float32."""
    if device.type != "cuda":
        return Precision(channels_last=sizes.channels_last)
    images = bench_images(sizes).to(device)
    seconds = {}
    for option in (Precision(a, c) for a in (False, True) for c in (False, True)):
        model = option.apply(bench_model(sizes).to(device))

        def step(model=model, x=images, option=option) -> None:
            with option.context(device), contextlib.ExitStack() as stack:
                if not train:
                    stack.enter_context(torch.no_grad())
                out = model(x)
            if train:
                out.float().mean().backward()

        rounds = time_rounds({"step": step}, repeats=5, device=device, warmup=2)
        seconds[option] = rounds.median("step")
    plain = seconds[Precision()]
    best = min(seconds, key=seconds.__getitem__)
    return best if seconds[best] < 0.95 * plain else Precision()


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
