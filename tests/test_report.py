"""The sweep dashboard: a real tiny sweep's report, its MLflow artifact, and Chromium drawing it."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image, ImageStat

from smsweep import report
from smsweep.engines.settings import SETTINGS_FILE, SweepSettings
from smsweep.errors import SpecError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PLOTS = {"by_category", "scatter", "heatmap", "importances", "class_iou", "curves"}


@pytest.fixture(scope="module")
def sweep_dir(finished_sweep) -> Path:
    """A finished tiny sweep (3 trials: random, selective, block), run once for the session
    (tests/conftest.py); its trials train in their own processes (Ray Train is not the subject
    here)."""
    return finished_sweep.experiment


@pytest.fixture(scope="module")
def built(sweep_dir: Path) -> Path:
    """`report` run on the sweep, from a clean slate (the page `run` may have written removed)."""
    (sweep_dir / report.REPORT_FILE).unlink(missing_ok=True)
    return report.build_report(sweep_dir).path


@pytest.mark.slow
def test_report_writes_the_page_and_logs_it_to_the_parent_run(sweep_dir, built, capsys):
    assert built == sweep_dir / "report.html" and built.is_file()
    assert report.main(sweep_dir) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(built)
    ids = json.loads((sweep_dir / "mlflow_run.json").read_text())
    artifacts = MlflowClient(ids["uri"]).list_artifacts(ids["run_id"])
    assert "report.html" in {a.path for a in artifacts}


@pytest.mark.slow
def test_report_shows_every_section_and_needs_no_network(built):
    page = built.read_text()
    for section in report.load_dashboard()["sections"]:
        assert html.escape(section["title"]) in page, section["title"]
    assert 'class="note section-error"' not in page, "a section failed"
    # 3 trials, one of them selective: every plot has data (the 2 curves included)
    expected = sum(s["kind"] in PLOTS for s in report.load_dashboard()["sections"])
    assert page.count('class="plotly-graph-div"') == expected == 7
    assert (
        len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 2
    )  # the best trial's 2 partition galleries
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"?https?:", page)
    for trial_text in ("random", "selective", "block", "finished"):
        assert trial_text in page


def _browser() -> str:
    found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if found is None:
        reason = "no Chromium on PATH (Debian/Ubuntu: apt-get install chromium)"
        if os.environ.get("SMSWEEP_REQUIRE_CHROMIUM"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _headless(browser: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=20000",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_report_renders_in_headless_chromium(built, tmp_path):
    browser = _browser()
    dom = _headless(browser, built, tmp_path / "profile", "--dump-dom")
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if re.search(r"Uncaught|Error", line)], console
    assert not re.search(r"<html[^>]*data-page-errors=\"", dom.stdout), "a script error"
    drawn = len(re.findall(r'class="[^"]*\bjs-plotly-plot\b', dom.stdout))
    assert drawn == built.read_text().count('class="plotly-graph-div"') == 7
    assert dom.stdout.count('class="main-svg"') >= 2 * drawn  # plotly drew its SVG layers

    shot = tmp_path / "page.png"
    _headless(
        browser, built, tmp_path / "profile", "--hide-scrollbars", "--window-size=1280,2400",
        f"--screenshot={shot}",
    )  # fmt: skip
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        assert len(rgb.getcolors(maxcolors=1 << 20) or range(1 << 20)) > 50
        assert max(ImageStat.Stat(rgb).stddev) > 10


def test_report_of_a_directory_that_is_not_a_sweep_names_the_fix(tmp_path):
    with pytest.raises(SpecError, match=r"not a sweep directory .*STORAGE/NAME"):
        report.main(tmp_path)
    with pytest.raises(SpecError, match="not a sweep directory"):
        report.build_report(tmp_path / "missing")
    assert not list(tmp_path.iterdir())


def _settings(directory: Path, mlflow_uri: str) -> SweepSettings:
    return SweepSettings(
        spec={},
        name="gone",
        experiment_dir=str(directory),
        mlflow_uri=mlflow_uri,
        experiment="gone",
    )


def test_report_of_a_sweep_whose_database_is_gone_names_the_fix(tmp_path):
    gone = f"sqlite:///{tmp_path / 'gone.db'}"
    _settings(tmp_path, gone).write()
    (tmp_path / "mlflow_run.json").write_text(
        f'{{"uri": "{gone}", "experiment_id": "1", "run_id": "abc"}}'
    )
    with pytest.raises(SpecError, match="does not exist; run the report where the sweep ran"):
        report.build_report(tmp_path)
    assert not (tmp_path / "gone.db").exists()


def test_settings_that_are_not_a_sweeps_name_the_file(tmp_path):
    (tmp_path / SETTINGS_FILE).write_text('{"spec": {}, "mlflow_uri": "x"}')
    (tmp_path / "mlflow_run.json").write_text('{"experiment_id": "1", "run_id": "abc"}')
    with pytest.raises(SpecError, match=r"smsweep\.json is not a sweep's settings \(name: field"):
        report.build_report(tmp_path)
    settings = _settings(tmp_path, "sqlite:///x.db")
    settings.write()
    assert SweepSettings.read(tmp_path) == settings


def _trial(trial_id: str, strategy: str, ratio: float, miou: float | None) -> report.Trial:
    params = {"masking.strategy": strategy, "masking.ratio": ratio, "masking.patch_size": 8}
    metrics = {} if miou is None else {"miou": miou, "iou/background": miou, "iou/disk": 0.0}
    history = {} if miou is None else {"miou": [(0, miou / 2), (1, miou)]}
    return report.Trial(trial_id, "TERMINATED", dict(params), params, metrics, "run", history)


def _sweep(trials: list[report.Trial], study=None, note: str = "no searcher") -> report.Sweep:
    return report.Sweep(
        name="fake",
        experiment_dir=Path("/nowhere"),
        mlflow_uri="sqlite:///nowhere.db",
        experiment="fake",
        run_id="0" * 32,
        spec={"search": {"num_samples": 4}},
        metric="miou",
        mode="max",
        space=["masking.strategy", "masking.ratio"],
        trials=report.ranked(trials, "miou", "max"),
        best_trial=trials[0].trial_id if trials else None,
        class_names=["background", "disk"] if trials else [],
        study=study,
        study_note=note,
    )


def _sections(page: str) -> dict[str, str]:
    parts = re.findall(r'<section id="[^"]+" data-kind="([^"]+)">(.*?)</section>', page, re.S)
    return {kind: body for kind, body in reversed(parts)}  # the first of each kind


def test_missing_data_gives_notes_not_failures():
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"masking.ratio": 0.5},
            distributions={"masking.ratio": optuna.distributions.FloatDistribution(0.4, 0.6)},
            value=0.3,
        )
    )
    trials = [_trial("aaaa", "random", 0.5, 0.3), _trial("bbbb", "block", 0.5, None)]
    page = report.render(_sweep(trials, study), report.load_dashboard())
    assert 'class="note section-error"' not in page
    sections = _sections(page)
    assert "No trial with masking.strategy in selective" in sections["heatmap"]
    assert "need at least 2 finished trials; the study has 1" in sections["importances"]
    assert "Every trial has the same masking.ratio" in sections["scatter"]
    assert "has no mask galleries" in sections["galleries"]
    assert (
        "plotly-graph-div" in sections["by_category"] and "plotly-graph-div" in sections["curves"]
    )


def test_importances_of_single_valued_parameters_are_a_note():
    study = optuna.create_study(direction="maximize")
    choice = optuna.distributions.CategoricalDistribution(["random"])
    for value in (0.2, 0.4, 0.3):
        study.add_trial(
            optuna.trial.create_trial(
                params={"masking.strategy": "random"},
                distributions={"masking.strategy": choice},
                value=value,
            )
        )
    trials = [_trial(f"t{i}", "random", 0.5, v) for i, v in enumerate((0.2, 0.4, 0.3))]
    sections = _sections(report.render(_sweep(trials, study), report.load_dashboard()))
    assert "plotly-graph-div" not in sections["importances"]
    assert (
        "Not ranked (a single value in the trials that searched it): masking.strategy"
        in (sections["importances"])
    )
    assert "No searched parameter took more than one value" in sections["importances"]


def test_an_empty_sweep_still_renders_every_section():
    page = report.render(_sweep([], note="no Optuna searcher state yet"), report.load_dashboard())
    for section in report.load_dashboard()["sections"]:
        assert html.escape(section["title"]) in page
    assert "plotly-graph-div" not in page
    assert "No trials yet." in page and "no Optuna searcher state yet" in page


def test_the_trivial_predictor_is_drawn_beside_the_trials():
    trials = [_trial(f"t{i}", "random", 0.4 + i / 10, 0.3 + i / 10) for i in range(3)]
    for trial, floor in zip(trials, (0.16, 0.17, 0.18), strict=True):
        trial.metrics |= {"floor/miou": floor, "floor/pixel_accuracy": 0.8, "pixel_accuracy": 0.9}
    sections = _sections(report.render(_sweep(trials), report.load_dashboard()))
    for kind in ("by_category", "scatter", "curves"):
        assert "trivial predictor (majority class): 0.170" in sections[kind], kind
    assert "floor/miou ranges 0.160-0.180" in sections["by_category"]
    assert "<th>floor/miou</th>" in sections["leaderboard"]
    assert ">0.1600<" in sections["leaderboard"] or ">0.16<" in sections["leaderboard"]


def test_the_dashboard_lives_at_the_top_level_and_every_package_ships():
    """dashboards/ (the definition and its template) is what the checkout loads, and the wheel's
    package list (pyproject.toml lists it: dashboards/ is mapped to smsweep.dashboards) holds
    every package of smsweep/, so a new subpackage cannot be left out of the wheel."""
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    assert report.load_dashboard()["directory"] == repo / "dashboards"
    assert (repo / "dashboards" / report.load_dashboard()["template"]).is_file()
    assert not (repo / "smsweep" / "dashboards").exists()
    setuptools = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"smsweep.dashboards": "dashboards"}
    found = {
        ".".join(init.parent.relative_to(repo).parts)
        for init in (repo / "smsweep").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == found | {"smsweep.dashboards"}


@pytest.mark.slow
def test_a_plain_install_builds_the_report(sweep_dir, tmp_path):
    """A wheel (`pip wheel .`), installed without the checkout on the path, carries the dashboard
    definition and template of dashboards/ inside the package and builds the report of the
    module's tiny finished sweep (the `sweep_dir` fixture) from them."""
    repo = Path(__file__).resolve().parents[1]
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = ["wheel", str(repo), "--no-deps", "--no-build-isolation", "-w", str(wheels)]
    subprocess.run([*pip, *build], check=True, timeout=600)
    wheel = next(wheels.glob("smsweep-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for source in (repo / "dashboards").iterdir():
            shipped = f"smsweep/dashboards/{source.name}"
            assert archive.read(shipped) == source.read_bytes(), shipped
    modules = {str(m.relative_to(repo)) for m in (repo / "smsweep").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    (sweep_dir / report.REPORT_FILE).unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "smsweep", "report", str(sweep_dir)],
        cwd=tmp_path,  # not the checkout: only the installed copy can be imported
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(sweep_dir / "report.html")
    assert "<html" in (sweep_dir / "report.html").read_text()
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import smsweep, smsweep.report as r; "
            "print(smsweep.__file__); print(r.load_dashboard()['directory'])",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    package, dashboard = where.stdout.split()
    assert package.startswith(str(site)), package
    assert Path(dashboard) == site / "smsweep" / "dashboards"


def test_a_long_sweep_folds_its_leaderboard_and_says_a_tie_at_the_top_is_one():
    trials = [_trial(f"t{i}", "random", 0.5, 0.25 if i < 3 else 0.1) for i in range(45)]
    page = report.render(_sweep(trials), report.load_dashboard())
    board = _sections(page)["leaderboard"]
    assert board.index("<details><summary>the other 25 trials</summary>") > board.index(">t19<")
    assert "a tie: 3 trials at miou 0.2500 (t0, t1, t2); first: t0" in page
    alone = report.render(_sweep(trials[2:]), report.load_dashboard())
    assert "a tie" not in alone and "<details><summary>the other" in alone
