"""The CLI contract: exit codes, messages that name the fix, and nothing written on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from PIL import Image

from smsweep.cli import main

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "sweeps" / "quickstart.yaml"


def _quickstart() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


def _snapshot(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def _run_in(tmp_path: Path, monkeypatch, capsys, argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI in tmp_path/work and assert it wrote nothing anywhere under tmp_path."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as exited:
        sys.exit(main(argv))
    out, err = capsys.readouterr()
    code = exited.value.code
    if code == 2:
        assert _snapshot(tmp_path) == before, "a rejected input must write nothing"
        assert "Traceback" not in err
    return code, out, err


def _write_spec(tmp_path: Path, spec: dict | str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return path


def _with(**changes) -> dict:
    """Quickstart with changes given as section__key=value."""
    spec = _quickstart()
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return spec


def _folder_tree(root: Path, *, bad: str = "") -> Path:
    """A small valid folder dataset, optionally broken in one way."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            root / "images" / f"im{i}.png"
        )
        mask = rng.integers(0, 3, (40, 40), dtype=np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    if bad == "corrupt":
        (root / "images" / "im3.png").write_bytes(b"not a png at all")
    elif bad == "mask_size":
        Image.fromarray(np.zeros((20, 24), np.uint8)).save(root / "masks" / "im2.png")
    elif bad == "mask_ids":
        Image.fromarray(np.full((40, 40), 7, np.uint8)).save(root / "masks" / "im5.png")
    elif bad == "empty":
        for path in (root / "images").iterdir():
            path.unlink()
    return root


def _folder_spec(root: Path) -> dict:
    spec = _with(data__source="folder", data__path=str(root), data__num_classes=3)
    spec["data"].pop("num_images", None)
    return spec


def test_validate_quickstart_exits_0(tmp_path, monkeypatch, capsys):
    code, out, _ = _run_in(tmp_path, monkeypatch, capsys, ["validate", str(QUICKSTART)])
    assert code == 0
    assert "ok: sweep 'quickstart' is valid" in out
    assert _snapshot(tmp_path / "work") == set()


def test_data_synth_writes_folder_format(tmp_path, monkeypatch, capsys):
    code, out, _ = _run_in(
        tmp_path, monkeypatch, capsys, ["data", "synth", "--out", "D", "--n", "8"]
    )
    assert code == 0
    assert "wrote 8 images" in out
    images = sorted((tmp_path / "work" / "D" / "images").iterdir())
    masks = sorted((tmp_path / "work" / "D" / "masks").iterdir())
    assert len(images) == 8 and len(masks) == 8
    assert [p.stem for p in images] == [p.stem for p in masks]


def test_data_synth_kind_textures(tmp_path, monkeypatch, capsys):
    argv = ["data", "synth", "--out", "D", "--n", "3", "--kind", "textures", "--num-classes", "2"]
    code, out, _ = _run_in(tmp_path, monkeypatch, capsys, argv)
    assert code == 0 and "wrote 3 images" in out
    written = tmp_path / "work" / "D"
    assert sorted(p.name for p in (written / "masks").iterdir())[0] == "texture_0000000.png"
    assert (written / "classes.txt").read_text().split() == [
        "background_blotches",
        "horizontal_stripes",
    ]


# Each case: (how to build the spec or argv, a fragment the message must contain).
def _case_argv(tmp_path: Path, case: str) -> list[str]:
    data_root = tmp_path / "data"
    specs = {
        "yaml_syntax": "name: x\nmasking: [ratio: 0.5\n",
        "not_a_mapping": "- just\n- a list\n",
        "unknown_section": _with(maskng={"ratio": 0.5}),
        "unknown_key": _with(masking__ratoi=0.5),
        "wrong_type": _with(pretrain__batch_size="big"),
        "ratio_too_high": _with(masking__ratio=1.5),
        "ratio_zero": _with(masking__ratio=0),
        "patch_not_dividing": _with(masking__patch_size=10),
        "unknown_strategy": _with(masking__strategy="smart"),
        "unknown_fill": _with(masking__fill="purple"),
        "space_unknown_key": _with(search__space={"masking.ratoi": {"uniform": [0.4, 0.6]}}),
        "space_two_kinds": _with(
            search__space={"masking.ratio": {"uniform": [0.4, 0.6], "choice": [0.5]}}
        ),
        "space_bad_choice": _with(search__space={"masking.patch_size": {"choice": [8, 10]}}),
        "space_range_outside": _with(search__space={"masking.ratio": {"uniform": [0.5, 1.2]}}),
        "space_dead_condition": _with(
            search__space={
                "masking.samples": {"randint": [1, 5], "when": {"masking.strategy": ["selective"]}}
            }
        ),
        "space_not_searchable": _with(
            search__space={"resources.train_workers": {"choice": [1, 2]}}
        ),
        "space_loguniform_zero": _with(search__space={"pretrain.lr": {"loguniform": [0, 0.1]}}),
        "cannot_fit_one_trial": _with(resources__train_workers=64),
        "gpus_split_between_ranks": _with(resources__train_workers=2, resources__gpus_per_trial=1),
        "cannot_fit_concurrent": _with(search__max_concurrent=64, search__num_samples=64),
        "mlflow_scheme": _with(tracking__mlflow_uri="ftp://example/mlflow"),
        "unknown_encoder": _with(model__encoder="resnet19"),
        "unknown_loss": _with(pretrain__loss="msssim_l2"),
        "weights_missing": _with(model__encoder_weights=str(tmp_path / "nope.pth")),
        "synthetic_classes": _with(data__num_classes=12),
        "size_vs_depth": _with(data__image_size=72, model__encoder_depth=4, masking__patch_size=8),
        "bad_name": _with(name="my sweep/1"),
        "token_stage_stride": _with(masking__token_stage=3, masking__patch_size=4),
        "token_twice": _with(masking__token_stage=2, masking__fill="token"),
        "too_many_partitions": _with(pretrain__partitions=500),
        "voc_classes": _with(data__source="voc", data__path=str(tmp_path), data__num_classes=5),
        "folder_no_path": _with(data__source="folder"),
        "folder_missing_path": _folder_spec(tmp_path / "does-not-exist"),
        "folder_no_images": lambda: _folder_spec(_folder_tree(data_root, bad="empty")),
        "folder_corrupt": lambda: _folder_spec(_folder_tree(data_root, bad="corrupt")),
        "folder_mask_size": lambda: _folder_spec(_folder_tree(data_root, bad="mask_size")),
        "folder_mask_ids": lambda: _folder_spec(_folder_tree(data_root, bad="mask_ids")),
    }
    if case == "missing_spec":
        return ["validate", str(tmp_path / "nope.yaml")]
    if case == "set_malformed":
        return ["validate", str(QUICKSTART), "--set", "masking.ratio"]
    if case == "set_unknown_key":
        return ["validate", str(QUICKSTART), "--set", "masking.ration=0.5"]
    if case == "set_out_of_range":
        return ["validate", str(QUICKSTART), "--set", "masking.ratio=1.5"]
    if case == "synth_bad_n":
        return ["data", "synth", "--out", "D", "--n", "0"]
    if case == "synth_bad_kind":
        return ["data", "synth", "--out", "D", "--n", "2", "--kind", "plaid"]
    if case == "run_bad_mlflow_uri":
        return ["run", str(QUICKSTART), "--mlflow-uri", "gopher://x"]
    if case == "run_mlflow_unreachable":
        return ["run", str(QUICKSTART), "--mlflow-uri", "http://127.0.0.1:9"]
    if case == "run_unknown_metric":
        return ["run", str(_write_spec(tmp_path, _with(search__metric="mIoU")))]
    if case == "run_experiment_exists":
        (tmp_path / "work" / "runs" / "quickstart").mkdir(parents=True)
        return ["run", str(QUICKSTART), "--storage", "runs"]
    if case == "run_storage_is_a_file":
        (tmp_path / "work").mkdir()
        (tmp_path / "work" / "taken").write_text("a file, not a directory")
        return ["run", str(QUICKSTART), "--storage", "taken/runs"]
    if case == "run_study_exists":
        (tmp_path / "work").mkdir()
        shared = f"sqlite:///{tmp_path / 'work' / 'studies.db'}"
        optuna.create_study(study_name="quickstart", storage=shared)
        return ["run", str(QUICKSTART), "--set", f"search.storage={shared}"]
    if case == "run_study_storage_unusable":
        return ["run", str(QUICKSTART), "--set", "search.storage=nosuchdb://x/y"]
    if case == "resume_not_a_sweep":
        return ["resume", str(tmp_path)]
    spec = specs[case]
    return ["validate", str(_write_spec(tmp_path, spec() if callable(spec) else spec))]


BAD_INPUTS = {
    "yaml_syntax": "not valid YAML at line",
    "not_a_mapping": "must hold a mapping",
    "unknown_section": "did you mean `masking`",
    "unknown_key": "did you mean `masking.ratio`",
    "wrong_type": "pretrain.batch_size",
    "ratio_too_high": "legal: float > 0 and < 1",
    "ratio_zero": "legal: float > 0 and < 1",
    "patch_not_dividing": "must divide data.image_size",
    "unknown_strategy": "choose one of: none, random, block, selective",
    "unknown_fill": "choose one of: mean, zero",
    "space_unknown_key": "did you mean `masking.ratio`",
    "space_two_kinds": "exactly one of choice, uniform",
    "space_bad_choice": "value 10 gives an invalid trial",
    "space_range_outside": "value 1.2 gives an invalid trial",
    "space_dead_condition": "would never be searched",
    "space_not_searchable": "cannot be searched",
    "space_loguniform_zero": "positive low bound",
    "cannot_fit_one_trial": "lower resources.train_workers",
    "gpus_split_between_ranks": "DDP needs whole GPUs per worker",
    "cannot_fit_concurrent": "set search.max_concurrent",
    "mlflow_scheme": "unsupported MLflow tracking URI",
    "unknown_encoder": "did you mean resnet18",
    "unknown_loss": "is not a known loss",
    "weights_missing": "is not a file",
    "synthetic_classes": "use 3..8",
    "size_vs_depth": "must be a multiple of 16",
    "bad_name": "usable as a directory name",
    "token_stage_stride": "must be a multiple of the stride 8",
    "token_twice": "use another input fill such as mean",
    "too_many_partitions": "raise data.num_images or lower pretrain.partitions",
    "voc_classes": "set data.num_classes: 21",
    "folder_no_path": "data.path is required",
    "folder_missing_path": "does-not-exist",
    "folder_no_images": "no images",
    "folder_corrupt": "im3.png",
    "folder_mask_size": "im2.png",
    "folder_mask_ids": "im5.png",
    "missing_spec": "does not exist",
    "set_malformed": "must look like KEY=VALUE",
    "set_unknown_key": "--set masking.ration=0.5 is invalid:\n  - unknown key `masking.ration`: "
    "did you mean `masking.ratio`",
    "set_out_of_range": "--set masking.ratio=1.5 is invalid:",
    "synth_bad_n": "--n",
    "synth_bad_kind": "--kind is 'plaid'; use one of shapes, textures",
    "run_bad_mlflow_uri": "unsupported MLflow tracking URI",
    "run_mlflow_unreachable": "does not answer",
    "run_unknown_metric": "is not reported by a trial; use one of miou",
    "run_experiment_exists": "python -m smsweep resume",
    "resume_not_a_sweep": "is not a sweep that can be resumed",
    "run_study_exists": "already holds a study named 'quickstart'; choose another --name",
    "run_study_storage_unusable": "search.storage 'nosuchdb://x/y' cannot be opened",
    "run_storage_is_a_file": "is a file; choose a directory",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_names_the_fix_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    argv = _case_argv(tmp_path, case)
    code, out, err = _run_in(tmp_path, monkeypatch, capsys, argv)
    assert code == 2, (out, err)
    assert err.startswith("error:"), err
    assert BAD_INPUTS[case].lower() in err.lower(), err


def test_module_entry_point_exit_codes(tmp_path):
    """`python -m smsweep` as a user runs it: 0 on a good spec, 2 and no traceback on a bad one."""
    bad = _write_spec(tmp_path, _with(masking__ratio=2))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    good = subprocess.run(
        [sys.executable, "-m", "smsweep", "validate", str(QUICKSTART)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert good.returncode == 0, good.stderr
    wrong = subprocess.run(
        [sys.executable, "-m", "smsweep", "validate", str(bad)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode == 2
    assert "masking.ratio" in wrong.stderr and "Traceback" not in wrong.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]
