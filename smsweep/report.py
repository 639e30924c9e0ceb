"""The sweep dashboard: one self-contained HTML page per experiment directory.

`build_report(experiment_dir)` reads the sweep from MLflow (the parent run and its trial runs, via
the URI saved in `smsweep.json`) and from Tune's state on disk (trial statuses and searched values,
the Optuna study inside the searcher's state, the galleries under `train/`), draws the sections that
`dashboards/sweep.yaml` lists with the template it names, writes `experiment_dir/report.html` and
logs it as an artifact of the sweep's parent run.

The page needs no network: plotly.js is inlined once and images are embedded as base64. A section
whose data is missing (no selective trial, too few trials for importances, ...) shows a short note.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import math
import os
import pickle
import re
import statistics
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from smsweep import tracking
from smsweep.errors import SpecError

REPORT_FILE = "report.html"
SETTINGS_FILE = "smsweep.json"  # as written by smsweep.sweep
# The dashboard's definition: `dashboards/` at the top of the source tree (a checkout, or an
# editable install), else inside the package (where a packaged install would carry it).
_HERE = Path(__file__).resolve().parent
DASHBOARD_DIR = next(
    (d for d in (_HERE.parent / "dashboards", _HERE / "dashboards") if d.is_dir()),
    _HERE.parent / "dashboards",
)
DASHBOARD_FILE = "sweep.yaml"
MISSING = "–"


@dataclass
class Trial:
    trial_id: str
    status: str
    searched: dict[str, Any]  # the values the search chose (Tune's trial config)
    params: dict[str, Any]  # the resolved trial config, dotted keys (MLflow params)
    metrics: dict[str, float]  # last value of every MLflow metric
    run_id: str | None = None
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


@dataclass
class Sweep:
    """Everything the page shows, loaded once (sections only read it)."""

    name: str
    experiment_dir: Path
    mlflow_uri: str
    experiment: str
    run_id: str
    spec: dict[str, Any]
    metric: str
    mode: str
    space: list[str]  # searched parameter names
    trials: list[Trial]  # best first
    best_trial: str | None = None
    class_names: list[str] = field(default_factory=list)
    galleries: list[tuple[str, bytes]] = field(default_factory=list)  # (name, PNG) of the best
    study: Any = None  # the Optuna study, or None
    study_note: str | None = None  # why there is no study

    @property
    def best(self) -> Trial | None:
        found = [t for t in self.trials if t.trial_id == self.best_trial]
        return found[0] if found else None


# ---------------------------------------------------------------------------------------- entry


def main(path: Path) -> int:
    """`python -m smsweep report PATH`: build the page; its path is the last line printed."""
    written = build_report(Path(path))
    print(written)
    return 0


def build_report(experiment_dir: Path) -> Path:
    """Write `experiment_dir/report.html`, log it to the sweep's parent run, return its path."""
    dashboard = load_dashboard()
    sweep = load_sweep(Path(experiment_dir), dashboard)
    page = render(sweep, dashboard)
    target = sweep.experiment_dir / REPORT_FILE
    target.write_text(page, encoding="utf-8")
    tracking.SweepRun(sweep.mlflow_uri, "", sweep.run_id).client().log_artifact(
        sweep.run_id, str(target)
    )
    return target


# ---------------------------------------------------------------------------------------- loading


def load_sweep(experiment_dir: Path, dashboard: Mapping[str, Any] | None = None) -> Sweep:
    """The sweep in `experiment_dir` from its files and its MLflow runs; SpecError if it is none.

    `dashboard` (default: the installed one) says which metric histories the page draws."""
    directory = experiment_dir.resolve()
    settings_file, run_file = directory / SETTINGS_FILE, directory / tracking.RUN_FILE
    if not settings_file.is_file() or not run_file.is_file():
        missing = SETTINGS_FILE if not settings_file.is_file() else tracking.RUN_FILE
        raise SpecError(
            f"{experiment_dir} is not a sweep directory (no {missing}); give the directory "
            "STORAGE/NAME that `python -m smsweep run` printed (e.g. smsweep_runs/quickstart)"
        )
    settings = json.loads(settings_file.read_text())
    ids = json.loads(run_file.read_text())
    uri = ids.get("uri") or settings["mlflow_uri"]
    _check_store(uri, experiment_dir)
    client = tracking.SweepRun(uri, ids["experiment_id"], ids["run_id"]).client()
    try:
        parent = client.get_run(ids["run_id"])
    except Exception as error:  # MlflowException: the store does not hold that run
        raise SpecError(
            f"the MLflow store {uri} has no run {ids['run_id']} (the parent run of "
            f"{experiment_dir}): {_first_line(error)}; open the report where the sweep's MLflow "
            "store is reachable, or fix the uri in " + str(run_file)
        ) from None
    spec = settings.get("spec", {})
    search = spec.get("search", {})
    sweep = Sweep(
        name=settings.get("name", directory.name),
        experiment_dir=directory,
        mlflow_uri=uri,
        experiment=settings.get("experiment", ""),
        run_id=ids["run_id"],
        spec=spec,
        metric=search.get("metric", "miou"),
        mode=search.get("mode", "max"),
        space=list(search.get("space") or {}),
        trials=[],
    )
    curves = [s["metric"] for s in (dashboard or load_dashboard())["sections"] if "metric" in s]
    sweep.trials = _load_trials(sweep, tracking.SweepRun(**ids), directory, curves)
    sweep.best_trial = parent.data.tags.get("smsweep.best_trial") or next(
        (t.trial_id for t in sweep.trials if t.metrics.get(sweep.metric) is not None), None
    )
    sweep.class_names = _class_names(client, sweep)
    sweep.galleries = _galleries(client, sweep)
    sweep.study, sweep.study_note = _load_study(directory, bool(sweep.space))
    return sweep


def _check_store(uri: str, experiment_dir: Path) -> None:
    tracking.check_reachable(uri)  # an http(s) server that does not answer: SpecError
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if not database.is_file():  # MlflowClient would create an empty one
            raise SpecError(
                f"the MLflow database {database} of {experiment_dir} does not exist; run the "
                "report where the sweep ran, or copy the database back to that path"
            )


def _load_trials(
    sweep: Sweep, parent: tracking.SweepRun, directory: Path, curves: Sequence[str]
) -> list[Trial]:
    client = parent.client()
    tune_trials = _tune_trials(directory)
    trials: dict[str, Trial] = {}
    for run in tracking.trial_runs(parent):
        trial_id = run.data.tags.get(tracking.TRIAL_ID, run.info.run_id[:8])
        params = {key: _value(text) for key, text in run.data.params.items()}
        status, searched = tune_trials.pop(trial_id, (None, None))
        if searched is None:
            searched = {k: params[k] for k in sweep.space if k in params}
        trials[trial_id] = Trial(
            trial_id=trial_id,
            status=status or run.info.status,
            searched=searched,
            params=params,
            metrics=dict(run.data.metrics),
            run_id=run.info.run_id,
        )
    for trial_id, (status, searched) in tune_trials.items():  # no MLflow run (yet)
        trials[trial_id] = Trial(trial_id, status or "PENDING", searched or {}, searched or {}, {})
    for trial in trials.values():
        if trial.run_id is None:
            continue
        for key in curves:
            history = client.get_metric_history(trial.run_id, key)
            trial.history[key] = sorted((m.step, m.value) for m in history)
    return ranked(list(trials.values()), sweep.metric, sweep.mode)


def _tune_trials(directory: Path) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
    """trial id -> (Tune status, searched config) from Tune's newest experiment state."""
    states = sorted(directory.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
        found = {}
        for meta_text, _runtime in data.get("trial_data", []):
            meta = json.loads(meta_text)
            config = meta.get("config")
            found[str(meta["trial_id"])] = (
                meta.get("status"),
                config if isinstance(config, dict) else None,
            )
        return found
    except (ValueError, KeyError, TypeError):  # another Ray's format: MLflow alone will do
        return {}


def _class_names(client: Any, sweep: Sweep) -> list[str]:
    """Class order from the best trial's iou_per_class.csv, else the iou/ metrics by name."""
    seen = sorted({k[4:] for t in sweep.trials for k in t.metrics if k.startswith("iou/")})
    best = sweep.best or next((t for t in sweep.trials if t.run_id), None)
    if best is None or best.run_id is None:
        return seen
    try:
        with _quiet_downloads(), tempfile.TemporaryDirectory() as scratch:
            table = Path(client.download_artifacts(best.run_id, "iou_per_class.csv", scratch))
            names = [line.split(",")[0] for line in table.read_text().splitlines()[1:] if line]
    except Exception:  # no such artifact (a trial that did not finish): names from metrics
        return seen
    return names + [name for name in seen if name not in names]


def _galleries(client: Any, sweep: Sweep) -> list[tuple[str, bytes]]:
    """The best trial's gallery PNGs: from train/<trial>/galleries, else its MLflow artifacts."""
    best = sweep.best
    if best is None:
        return []
    local = sorted((sweep.experiment_dir / "train" / best.trial_id / "galleries").glob("*.png"))
    if local:
        return [(path.stem, path.read_bytes()) for path in local]
    if best.run_id is None:
        return []
    try:
        with _quiet_downloads(), tempfile.TemporaryDirectory() as scratch:
            folder = Path(client.download_artifacts(best.run_id, "galleries", scratch))
            return [(path.stem, path.read_bytes()) for path in sorted(folder.glob("*.png"))]
    except Exception:  # no galleries logged
        return []


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow download progress bar in the report's output."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _load_study(directory: Path, searched: bool) -> tuple[Any, str | None]:
    """The Optuna study from the searcher's saved state: the pickle Tune writes in the experiment
    directory (and unpickles itself on resume), so it is trusted as the sweep's own file."""
    if not searched:
        return None, "this sweep searched no parameters (search.space is empty)"
    states = sorted(directory.glob("searcher-state-*.pkl"))
    if not states:
        return None, "no Optuna searcher state in the experiment directory yet"
    try:
        import ray.tune.search.optuna  # noqa: F401  (the pickle refers to it)

        with states[-1].open("rb") as file:
            state = pickle.load(file)
        study = state.get("_ot_study") if isinstance(state, dict) else None
    except Exception as error:
        return None, f"the Optuna searcher state could not be read ({_first_line(error)})"
    if study is None:
        return None, "the searcher state holds no Optuna study"
    return study, None


def ranked(trials: list[Trial], metric: str, mode: str) -> list[Trial]:
    """Best first; trials without the metric last."""
    sign = -1.0 if mode == "max" else 1.0

    def key(trial: Trial) -> tuple[bool, float]:
        value = trial.metrics.get(metric)
        return (value is None, sign * (value or 0.0))

    return sorted(trials, key=key)


def _value(text: str) -> Any:
    """An MLflow param (text) back as the number/list it was; anything else stays text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# ---------------------------------------------------------------------------------------- page


def load_dashboard(directory: Path | None = None) -> dict[str, Any]:
    """The dashboard definition (`dashboards/sweep.yaml`): template name and sections."""
    directory = directory or DASHBOARD_DIR
    definition = directory / DASHBOARD_FILE
    if not definition.is_file():
        raise FileNotFoundError(
            f"the dashboard definition {definition} is missing: it ships in the source tree next "
            "to the smsweep package; install smsweep from a checkout (`pip install -e .`)"
        )
    loaded = yaml.safe_load(definition.read_text())
    for section in loaded["sections"]:
        if section.get("kind") not in SECTIONS:
            raise ValueError(f"{definition}: unknown section kind {section.get('kind')!r}")
    return loaded | {"directory": directory}


@dataclass
class Section:
    kind: str
    title: str
    anchor: str
    caption: str = ""
    body: str = ""  # trusted HTML (a plotly div, a table built with escaping, images)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def render(sweep: Sweep, dashboard: Mapping[str, Any]) -> str:
    """The whole page as one HTML string."""
    import jinja2
    from markupsafe import Markup
    from plotly.offline import get_plotlyjs

    from smsweep import __version__

    sections = []
    for number, config in enumerate(dashboard["sections"]):
        section = Section(
            kind=config["kind"],
            title=config["title"],
            anchor=f"s{number}-{re.sub(r'[^a-z0-9]+', '-', config['title'].lower()).strip('-')}",
            caption=config.get("caption", ""),
        )
        try:
            body = SECTIONS[section.kind](sweep, config, section.notes)
            section.body = Markup(body or "")
        except Exception as error:  # one broken section must not cost the whole page
            section.errors.append(f"this section could not be drawn: {_first_line(error)}")
        sections.append(section)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(dashboard["directory"])),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    template = environment.get_template(dashboard.get("template", "sweep.html.j2"))
    return template.render(
        sweep=_header(sweep),
        sections=sections,
        plotly_js=Markup(get_plotlyjs()),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        version=__version__,
    )


def _header(sweep: Sweep) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for trial in sweep.trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    wanted = sweep.spec.get("search", {}).get("num_samples")
    line = f"{len(sweep.trials)}" + (f" of {wanted}" if wanted else "")
    if counts:
        line += " (" + ", ".join(f"{n} {status.lower()}" for status, n in counts.items()) + ")"
    best = sweep.best
    value = best.metrics.get(sweep.metric) if best else None
    best_line = (
        f"{best.trial_id}: {sweep.metric} {value:.4f}   {_short(best.searched)}"
        if best is not None and value is not None
        else "no finished trial yet"
    )
    return {
        "name": sweep.name,
        "experiment_dir": str(sweep.experiment_dir),
        "mlflow_uri": sweep.mlflow_uri,
        "experiment": sweep.experiment,
        "run_id": sweep.run_id,
        "trials_line": line,
        "best_line": best_line,
        "spec_yaml": yaml.safe_dump(sweep.spec, sort_keys=False),
    }


# ---------------------------------------------------------------------------------------- sections
# Each builder returns the section's HTML (or "" with a note appended to `notes`).

Notes = list[str]


def _leaderboard(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    if not sweep.trials:
        notes.append("No trials yet.")
        return ""
    metrics = [sweep.metric] + [m for m in ("miou",) if m != sweep.metric]
    head = ["#", "trial", "status", *sweep.space, *metrics]
    rows = []
    for number, trial in enumerate(sweep.trials, start=1):
        cells = [(str(number), True), (trial.trial_id, False), (trial.status, False)]
        cells += [
            (_show(trial.searched.get(key)), _is_number(trial.searched.get(key)))
            for key in sweep.space
        ]
        cells += [(_show(trial.metrics.get(m)), True) for m in metrics]
        best = ' class="best"' if trial.trial_id == sweep.best_trial else ""
        rows.append(
            f"<tr{best}>"
            + "".join(
                f"<td{' class=num' if num else ''}>{html.escape(text)}</td>" for text, num in cells
            )
            + "</tr>"
        )
    header = "".join(f"<th>{html.escape(name)}</th>" for name in head)
    body = "".join(rows)
    return (
        f'<table class="leaderboard"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'
    )


def _by_category(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    import plotly.graph_objects as go

    x, y = config["x"], config["y"]
    groups = _group(_points(sweep.trials, x, y), key=lambda p: str(p[0]))
    if not groups:
        notes.append(f"No finished trial has both {x} and {y} yet.")
        return ""
    figure = go.Figure()
    for name, points in groups.items():
        figure.add_trace(
            go.Box(
                y=[p[1] for p in points],
                name=name,
                text=[p[2] for p in points],
                boxpoints="all",
                jitter=0.3,
                pointpos=0,
                hovertemplate=f"%{{text}}<br>{y} %{{y:.4f}}<extra>{html.escape(name)}</extra>",
            )
        )
    figure.update_layout(xaxis_title=x, yaxis_title=y, showlegend=False)
    return _plot(figure, config)


def _scatter(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    import plotly.graph_objects as go

    x, y, color = config["x"], config["y"], config.get("color")
    points = [p for p in _points(sweep.trials, x, y, color) if _is_number(p[0])]
    if not points:
        notes.append(f"No finished trial has a numeric {x} and {y} yet.")
        return ""
    groups = _group(points, key=lambda p: str(p[3]) if color else y)
    figure = go.Figure()
    for name, members in groups.items():
        figure.add_trace(
            go.Scatter(
                x=[p[0] for p in members],
                y=[p[1] for p in members],
                text=[p[2] for p in members],
                name=name,
                mode="markers",
                marker={"size": 11, "opacity": 0.85},
                hovertemplate=f"%{{text}}<br>{x} %{{x:.3g}}<br>{y} %{{y:.4f}}"
                f"<extra>{html.escape(name)}</extra>",
            )
        )
    figure.update_layout(xaxis_title=x, yaxis_title=y, legend_title_text=color or "")
    if len({p[0] for p in points}) == 1:
        notes.append(f"Every trial has the same {x}: nothing to compare along it.")
    return _plot(figure, config)


def _heatmap(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    import plotly.graph_objects as go

    x, y, z = config["x"], config["y"], config["z"]
    where = config.get("where") or {}
    chosen = [t for t in sweep.trials if _matches(t, where)]
    if not chosen:
        notes.append(f"No trial with {_describe(where)}: no {x} × {y} grid to show.")
        return ""
    cells: dict[tuple[Any, Any], list[float]] = {}
    for trial in chosen:
        value = trial.metrics.get(z)
        if value is None or x not in trial.params or y not in trial.params:
            continue
        cells.setdefault((trial.params[x], trial.params[y]), []).append(value)
    if not cells:
        notes.append(f"No finished trial with {_describe(where)} has {z} yet.")
        return ""
    xs = sorted({k[0] for k in cells}, key=_sort_key)
    ys = sorted({k[1] for k in cells}, key=_sort_key)
    grid = [[_mean(cells.get((a, b))) for a in xs] for b in ys]
    counts = [[len(cells.get((a, b), [])) for a in xs] for b in ys]
    figure = go.Figure(
        go.Heatmap(
            x=[str(v) for v in xs],
            y=[str(v) for v in ys],
            z=grid,
            customdata=counts,
            texttemplate="%{z:.3f}",
            colorscale="Viridis",
            colorbar={"title": {"text": f"mean {z}"}},
            hovertemplate=f"{x} %{{x}}<br>{y} %{{y}}<br>mean {z} %{{z:.4f}}<br>"
            "%{customdata} trial(s)<extra></extra>",
        )
    )
    figure.update_layout(xaxis_title=x, yaxis_title=y, xaxis_type="category", yaxis_type="category")
    return _plot(figure, config)


def _importances(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    import optuna
    import plotly.graph_objects as go

    if sweep.study is None:
        notes.append(f"No parameter importances: {sweep.study_note}.")
        return ""
    complete = [t for t in sweep.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        notes.append(
            f"Parameter importances need at least 2 finished trials; the study has {len(complete)}."
        )
        return ""
    values: dict[str, set[str]] = {}
    for trial in complete:
        for name, value in trial.params.items():
            values.setdefault(name, set()).add(repr(value))
    varied = [name for name, seen in values.items() if len(seen) > 1]
    if single := sorted(set(values) - set(varied)):
        notes.append(
            f"Not ranked (a single value in the trials that searched it): {', '.join(single)}."
        )
    if not varied:
        notes.append("No searched parameter took more than one value: nothing to rank.")
        return ""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = optuna.importance.get_param_importances(sweep.study, params=varied)
    except (ValueError, RuntimeError) as error:  # e.g. too few trials for the evaluator
        notes.append(f"Optuna could not compute parameter importances: {_first_line(error)}")
        return ""
    notes += sorted({f"Optuna: {_first_line(w.message)}" for w in caught})
    if not any(found.values()):
        notes.append(
            f"{sweep.metric} did not vary with any searched parameter (all importances 0)."
        )
    names = list(found)[::-1]  # largest on top
    figure = go.Figure(
        go.Bar(
            x=[found[n] for n in names],
            y=names,
            orientation="h",
            texttemplate="%{x:.2f}",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    figure.update_layout(xaxis_title=f"importance for {sweep.metric}", xaxis_range=[0, 1])
    return _plot(figure, config, height=140 + 40 * len(names))


def _class_iou(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    import plotly.graph_objects as go

    trials = [t for t in sweep.trials if any(k.startswith("iou/") for k in t.metrics)]
    if not trials or not sweep.class_names:
        notes.append("No trial has per-class IoU yet (it is logged after fine-tuning).")
        return ""
    grid = [[_finite(t.metrics.get(f"iou/{name}")) for name in sweep.class_names] for t in trials]
    labels = [f"{t.trial_id} {_short(t.searched)}".strip() for t in trials]
    figure = go.Figure(
        go.Heatmap(
            x=sweep.class_names,
            y=labels,
            z=grid,
            zmin=0,
            zmax=1,
            texttemplate="%{z:.2f}",
            colorscale="Viridis",
            colorbar={"title": {"text": "IoU"}},
            hovertemplate="%{y}<br>%{x}: IoU %{z:.4f}<extra></extra>",
        )
    )
    figure.update_layout(yaxis_autorange="reversed", xaxis_title="class")
    return _plot(figure, config, height=200 + 28 * len(trials))


def _curves(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    import plotly.graph_objects as go

    metric, offset = config["metric"], config.get("step_offset", 0)
    figure = go.Figure()
    for trial in sweep.trials:
        history = trial.history.get(metric) or []
        if not history:
            continue
        figure.add_trace(
            go.Scatter(
                x=[step + offset for step, _ in history],
                y=[value for _, value in history],
                name=f"{trial.trial_id} {_short(trial.searched)}".strip(),
                mode="lines+markers",
                hovertemplate=f"{config.get('x', 'step')} %{{x}}<br>{metric} %{{y:.4f}}",
            )
        )
    if not figure.data:
        notes.append(f"No trial has logged {metric} yet.")
        return ""
    figure.update_layout(
        xaxis_title=config.get("x", "step"),
        yaxis_title=metric,
        xaxis_dtick=1,
        legend_title_text="trial",
    )
    return _plot(figure, config)


def _gallery_section(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    if sweep.best is None:
        notes.append("No best trial yet.")
        return ""
    if not sweep.galleries:
        notes.append(f"Trial {sweep.best.trial_id} has no mask galleries.")
        return ""
    figures = []
    for name, png in sweep.galleries:
        data = base64.b64encode(png).decode("ascii")
        label = re.sub(r"partition 0*(\d)", r"partition \1", name.replace("_", " "))
        figures.append(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(label)}</figcaption></figure>"
        )
    which = f"{sweep.best.trial_id} ({_short(sweep.best.searched)})"
    intro = f"<p>Trial {html.escape(which)}</p>"
    return intro + f'<div class="galleries">{"".join(figures)}</div>'


SECTIONS: dict[str, Callable[[Sweep, Mapping[str, Any], Notes], str]] = {
    "leaderboard": _leaderboard,
    "by_category": _by_category,
    "scatter": _scatter,
    "heatmap": _heatmap,
    "importances": _importances,
    "class_iou": _class_iou,
    "curves": _curves,
    "galleries": _gallery_section,
}


# ---------------------------------------------------------------------------------------- helpers


def _plot(figure: Any, config: Mapping[str, Any], height: int = 420) -> str:
    figure.update_layout(
        template="plotly_white",
        height=config.get("height", height),
        margin={"l": 60, "r": 20, "t": 20, "b": 50},
    )
    return figure.to_html(
        full_html=False,
        include_plotlyjs=False,  # inlined once, in the page's <head>
        config={"displaylogo": False, "responsive": True},
    )


def _points(trials: Iterable[Trial], *keys_and_metric: str) -> list[tuple[Any, ...]]:
    """(x, metric, trial id[, color]) for trials that have x and the metric."""
    x, metric, *rest = keys_and_metric
    points = []
    for trial in trials:
        value = trial.metrics.get(metric)
        if value is None or x not in trial.params:
            continue
        extra = [trial.params.get(key, MISSING) for key in rest]
        points.append((trial.params[x], value, trial.trial_id, *extra))
    return points


def _group(points: Sequence[tuple[Any, ...]], key: Callable) -> dict[str, list[tuple[Any, ...]]]:
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for point in points:
        groups.setdefault(key(point), []).append(point)
    return dict(sorted(groups.items()))


def _matches(trial: Trial, where: Mapping[str, Sequence[Any]]) -> bool:
    return all(trial.params.get(key) in allowed for key, allowed in where.items())


def _describe(where: Mapping[str, Sequence[Any]]) -> str:
    return " and ".join(f"{k} in {', '.join(map(str, v))}" for k, v in where.items()) or "data"


def _mean(values: list[float] | None) -> float | None:
    return statistics.fmean(values) if values else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if _is_number(value) else (1, str(value))


def _show(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.4g}"
    return str(value)


def _short(params: Mapping[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key.rsplit('.', 1)[-1]}={shown}")
    return " ".join(parts)


def _first_line(message: Any) -> str:
    text = str(message).strip()
    return text.splitlines()[0] if text else type(message).__name__


__all__ = ["Sweep", "Trial", "build_report", "load_dashboard", "load_sweep", "main", "render"]
