"""The page: the dashboard definition (`dashboards/sweep.yaml`), the header, and rendering the
sections into the template it names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from smsweep.errors import first_line
from smsweep.report.load import Sweep
from smsweep.report.sections import SECTIONS
from smsweep.spec.search_schema import trial_count
from smsweep.verdict.arms import status_word

DASHBOARD_FILE = "sweep.yaml"


def _dashboard_dir() -> Path:
    """Where the dashboard's definition and template are: `dashboards/` at the top of the
    checkout, which a wheel installs as the package `smsweep.dashboards` (pyproject.toml's
    package-dir), so every install has it. An installed copy has it inside the package; a
    checkout (an editable install, or the tests) has it beside the package."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "dashboards"
    return installed if installed.is_dir() else package.parent / "dashboards"


DASHBOARD_DIR = _dashboard_dir()


def load_dashboard(directory: Path | None = None) -> dict[str, Any]:
    """The dashboard definition (`dashboards/sweep.yaml`): template name and sections."""
    directory = directory or DASHBOARD_DIR
    definition = directory / DASHBOARD_FILE
    if not definition.is_file():
        raise FileNotFoundError(
            f"the dashboard definition {definition} is missing: it ships inside the smsweep "
            "package (smsweep/dashboards, from dashboards/ in the source); reinstall smsweep "
            "(`pip install .`)"
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
            section.errors.append(f"this section could not be drawn: {first_line(error)}")
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
    search = sweep.spec.get("search", {})
    wanted = search.get("num_samples")
    if wanted:
        wanted = trial_count(wanted, len(search.get("controls") or ()), search.get("repeats", 1))
    line = f"{len(sweep.trials)}" + (f" of {wanted}" if wanted else "")
    if counts:
        line += " (" + ", ".join(f"{n} {status_word(status)}" for status, n in counts.items()) + ")"
    best = sweep.best
    value = best.metrics.get(sweep.metric) if best else None
    repeats = search.get("repeats", 1)
    best_line = (
        f"{best.trial_id}: {sweep.metric} {value:.4f}   {best.arm.describe(repeats)}"
        if best is not None and value is not None
        else "no finished trial yet"
    )
    tied = [t.trial_id for t in sweep.trials if value is not None and _ties(t, sweep, value)]
    if len(tied) > 1:  # "best" alone would pick one of equals at random
        best_line = f"a tie: {len(tied)} trials at {sweep.metric} {value:.4f} (" + (
            ", ".join(tied[:5]) + (", ..." if len(tied) > 5 else "") + f"); first: {best_line}"
        )
    top = sweep.verdict.best if sweep.verdict is not None else None
    if top is not None and top.interval.n >= 2:
        best_line = (
            f"{top.name}: {sweep.metric} {top.interval.show(digits=4)} over {top.interval.n} "
            f"repeats (best trial {best_line})"
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


def _ties(trial: Any, sweep: Sweep, value: float) -> bool:
    """The trial's score equals the best one as shown (4 decimals)."""
    score = trial.metrics.get(sweep.metric)
    return isinstance(score, (int, float)) and round(score, 4) == round(value, 4)
