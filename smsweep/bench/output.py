"""The bench's output: the targets (`TARGETS`), the keys every result carries, the verdicts
(`passes`), the one-line JSON (`format_json`) and the readable table (`format_table`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

# metric -> (comparison, target). Everything else in the output is information.
TARGETS: dict[str, tuple[str, float]] = {
    "scorer_vs_literal": (">=", 20.0),
    "scorer_vs_forward": ("<=", 1.15),
    "train_step_vs_bare": (">=", 0.95),
    "actors_2_vs_1": (">=", 1.6),
    "trainer_fits_per_trial": ("==", 1),
    "trial_fixed_overhead_in_process_s": ("<=", 3.0),
    "partition0_cache_saving": (">=", 0.8),
}
# On a CPU the literal reference runs the same B*K forwards as the scorer, at batch 1: batching is
# all the scorer can gain there, so its target is this share of that bound (literal_forward_bound).
CPU_SHARE_OF_LITERAL_BOUND = 0.9
REQUIRED_KEYS: tuple[str, ...] = (
    *TARGETS,
    "scoring_ms_per_image",
    "peak_rss_mb",
    "trial_fixed_overhead_s",
    "device",
    "torch_threads",
    "sizes",
)
# The required keys that only the Ray measurements give (null with --skip-ray).
RAY_KEYS: tuple[str, ...] = (
    "actors_2_vs_1",
    "trainer_fits_per_trial",
    "trial_fixed_overhead_s",
    "trial_fixed_overhead_in_process_s",
    "partition0_cache_saving",
)
UNITS = {
    "scorer_vs_literal": "x",
    "scorer_vs_forward": "x",
    "train_step_vs_bare": "x",
    "actors_2_vs_1": "x",
    "trainer_fits_per_trial": "",
    "trial_fixed_overhead_in_process_s": "s",
    "partition0_cache_saving": "",
}


def target(metric: str, results: Mapping[str, Any]) -> tuple[str, float]:
    """The metric's (comparison, target) for these results: `scorer_vs_literal` on a CPU is
    held to 0.9 x literal_forward_bound, everywhere else to TARGETS."""
    bound = results.get("literal_forward_bound")
    on_cpu = str(results.get("device", "")).startswith("cpu")
    relative = metric == "scorer_vs_literal" and on_cpu and isinstance(bound, (int, float))
    if relative and math.isfinite(bound):
        return ">=", CPU_SHARE_OF_LITERAL_BOUND * bound
    return TARGETS[metric]


def passes(metric: str, value: Any, results: Mapping[str, Any] | None = None) -> bool | None:
    """Whether `value` meets the metric's target (None: no target, or no value)."""
    if metric not in TARGETS or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    op, goal = target(metric, results or {})
    if op == ">=":
        return value >= goal
    if op == "<=":
        return value <= goal
    return value == goal


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def format_json(results: Mapping[str, Any]) -> str:
    """One line of JSON: the required keys first, then the rest, then `targets`, `passed` and
    `all_passed`. Raises ValueError when a required key is missing."""
    missing = [key for key in REQUIRED_KEYS if key not in results]
    if missing:
        raise ValueError(f"bench results lack {missing}")
    ordered = {key: results[key] for key in REQUIRED_KEYS}
    ordered |= {key: value for key, value in results.items() if key not in ordered}
    verdicts = {metric: passes(metric, results[metric], results) for metric in TARGETS}
    ordered["targets"] = {metric: _target_text(metric, results) for metric in TARGETS}
    ordered["passed"] = verdicts
    ordered["all_passed"] = all(verdicts.values())
    return json.dumps(_finite(ordered), allow_nan=False, separators=(", ", ": "))


def _target_text(metric: str, results: Mapping[str, Any]) -> str:
    op, value = target(metric, results)
    if (op, value) != TARGETS[metric]:  # relative to a bound measured in the same run
        return f"{op} {CPU_SHARE_OF_LITERAL_BOUND:g} x literal_forward_bound = {value:.3g}"
    return f"{op} {value:g}"


def _show(value: Any, unit: str = "") -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, list):
        return " ".join(_show(item, unit) for item in value)
    if isinstance(value, float):
        return f"{value:.3g}{unit}" if abs(value) < 100 else f"{value:.0f}{unit}"
    return f"{value}{unit}"


INFO_ROWS = (
    ("scoring_ms_per_image", "ms"),
    ("literal_forward_bound", "x"),
    ("batching_gain", "x"),
    ("actors_2_vs_1_per_cycle", ""),
    ("actors_2_vs_1_ceiling", "x"),
    ("channels_last_gain_scoring", "x"),
    ("channels_last_gain_train", "x"),
    ("actor_ms_per_image_1", "ms"),
    ("actor_ms_per_image_2", "ms"),
    ("train_images_per_s", "/s"),
    ("bare_images_per_s", "/s"),
    ("trial_wall_s", "s"),
    ("trial_compute_s", "s"),
    ("trial_fixed_overhead_s", "s"),
    ("trial_wall_in_process_s", "s"),
    ("trial_compute_in_process_s", "s"),
    ("partition0_seconds", "s"),
    ("partition0_cache_savings", ""),
    ("partition0_cache_entries", ""),
    ("partition0_entry_mb", " MB"),
    ("actor_busy_cpus_1", ""),
    ("actor_busy_cpus_2", ""),
    ("other_cpus_scorer", ""),
    ("other_cpus_train", ""),
    ("other_cpus_actors_1", ""),
    ("other_cpus_actors_2", ""),
    ("peak_rss_mb", " MB"),
    ("peak_rss_children_mb", " MB"),
    ("wall_seconds", "s"),
)


def format_table(results: Mapping[str, Any]) -> str:
    """A readable table: targeted metrics with target and pass/fail, then the information rows."""
    rows = [("metric", "value", "target", "pass")]
    for metric in TARGETS:
        verdict = passes(metric, results.get(metric), results)
        shown = {True: "PASS", False: "FAIL", None: "n/a"}[verdict]
        value = _show(results.get(metric), UNITS[metric])
        rows.append((metric, value, _target_text(metric, results), shown))
    rows += [(key, _show(results[key], unit), "", "") for key, unit in INFO_ROWS if key in results]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    context = [f"device: {results.get('device')}, torch threads: {results.get('torch_threads')}"]
    if "skipped" in results:
        context.append(f"not measured: {results['skipped']}")
    if "precision" in results:
        context.append(f"precision: {results['precision']}")
    if "load_avg_1m_start" in results:
        context.append(
            f"machine load (1-min average, the bench's own work included): "
            f"{results['load_avg_1m_start']} at the start, {results.get('load_avg_1m_end')} at "
            "the end"
        )
    if "sizes" in results:
        context.append("sizes: " + ", ".join(f"{k}={v}" for k, v in results["sizes"].items()))
    return "\n".join([*context, "", *lines])
