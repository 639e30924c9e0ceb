"""The sweep spec: typed, frozen, validated once at load.

A spec is a YAML file with the sections below. Every key is checked: an unknown key names the
nearest valid one, a wrong type or an out-of-range value names the legal range (see `errors.py` and
`_explain` below). Nothing here imports torch, Ray or MLflow: validating a spec is cheap and has no
side effects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from smsweep.arms import score_key, trial_count
from smsweep.errors import SpecError
from smsweep.space import Distribution

Strategy = Literal["none", "random", "block", "selective", "saliency", "saliency_hard", "mixed"]
STRATEGIES: tuple[str, ...] = Strategy.__args__
MODEL_BASED = ("selective", "saliency", "saliency_hard")  # masks scored once per partition
FILLS = ("mean", "zero", "noise", "blur", "token")
SOURCES = ("synthetic", "textures", "folder", "voc", "cityscapes")
GENERATED_SOURCES = ("synthetic", "textures")  # made from the seed: no path, `num_images` counts
FIXED_NUM_CLASSES = {"voc": 21, "cityscapes": 19}
GENERATED_CLASSES = {"synthetic": (3, 8), "textures": (2, 8)}
MLFLOW_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _f(default: Any, doc: str, **bounds: Any) -> Any:
    """A field with its documentation (rendered into the README's spec reference)."""
    return Field(default, description=doc, **bounds)


class DataConfig(_Section):
    source: Literal["synthetic", "textures", "folder", "voc", "cityscapes"] = _f(
        "synthetic",
        "where images come from: generated shapes (synthetic) or texture mosaics (textures), or "
        "folder/voc/cityscapes read from `path`",
    )
    path: str | None = _f(None, "dataset root (required unless the source is generated)")
    image_size: int = _f(64, "square side the pipeline resizes/crops to", ge=16, le=4096)
    num_classes: int = _f(
        5,
        "segmentation classes (voc 21, cityscapes 19, synthetic 3..8, textures 2..8)",
        ge=2,
        le=1000,
    )
    skip_bad: bool = _f(False, "skip unreadable images (one warning lists them) instead of failing")
    num_images: int = _f(
        128, "generated sources (synthetic, textures): how many images", ge=4, le=1_000_000
    )
    val_fraction: float = _f(0.2, "labeled images held out for validation", gt=0, le=0.9)
    label_fraction: float = _f(
        1.0, "of the other labeled images, the share used to fine-tune", gt=0, le=1
    )
    augment: bool = _f(
        True,
        "albumentations flips/crops/colour jitter when fine-tuning (pretraining uses a fixed crop "
        "so that precomputed masks cover the pixels they were scored on)",
    )


class ModelConfig(_Section):
    encoder: str = _f("resnet18", "a segmentation-models-pytorch encoder name")
    encoder_weights: str | None = _f(
        None, "a local encoder weights file (e.g. ImageNet); nothing is ever downloaded"
    )
    encoder_depth: int = _f(
        5, "U-Net depth; data.image_size must be a multiple of 2**depth", ge=3, le=5
    )
    decoder_channels: tuple[int, ...] | None = _f(
        None, "decoder widths, one per depth level (default: smp's)"
    )
    channels_last: bool = _f(
        True,
        "run the convolutions in channels-last (NHWC) memory layout: same results within float "
        "rounding, faster on CPUs and tensor-core GPUs",
    )

    @field_validator("decoder_channels")
    @classmethod
    def _positive_channels(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or min(value) < 1):
            raise ValueError("decoder_channels must be a non-empty list of positive integers")
        return value


Schedule = Literal["constant", "cosine"]


class PretrainConfig(_Section):
    partitions: int = _f(10, "P: the unlabeled images are split into P partitions", ge=1, le=1000)
    epochs_per_partition: int | None = _f(
        None,
        "passes over each partition (default 1 when steps_per_partition is not set either)",
        ge=1,
        le=100_000,
    )
    steps_per_partition: int | None = _f(
        None,
        "optimizer steps on each partition, cycling through it (instead of epochs_per_partition)",
        ge=1,
        le=10_000_000,
    )
    batch_size: int = _f(16, "images per step (per Train worker)", ge=1, le=4096)
    lr: float = _f(1e-3, "AdamW peak learning rate", gt=0, le=1)
    weight_decay: float = _f(0.0, "AdamW weight decay", ge=0, le=1)
    schedule: Schedule = _f(
        "cosine",
        "learning rate over all pretraining steps (every partition together): linear warm-up, "
        "then constant or cosine decay to 0",
    )
    warmup: float = _f(0.05, "share of the pretraining steps spent warming up", ge=0, lt=1)
    loss: str | dict[str, float] = _f(
        "msssim_l1", "a loss name, or {name: weight, ...} for a weighted sum"
    )

    @model_validator(mode="after")
    def _one_budget(self) -> PretrainConfig:
        if self.epochs_per_partition is not None and self.steps_per_partition is not None:
            raise ValueError(
                "give the pretraining budget once: pretrain.epochs_per_partition or "
                "pretrain.steps_per_partition, not both"
            )
        return self


class MixedConfig(_Section):
    """The second (patch size, ratio) of Mix-and-Mask; the first is masking.patch_size/ratio."""

    patch_size: int = _f(16, "mixed: patch size of the second config", ge=1, le=1024)
    ratio: float = _f(0.5, "mixed: masking ratio of the second config", gt=0, lt=1)
    probability: float = _f(0.5, "mixed: chance that a batch uses the second config", ge=0, le=1)


class MaskingConfig(_Section):
    strategy: Strategy = _f("random", "how patches are chosen (see Strategies)")
    ratio: float = _f(
        0.5, "r: fraction of patches masked; exactly round(r*N) per image", gt=0, lt=1
    )
    patch_size: int = _f(8, "patch side in pixels; must divide data.image_size", ge=1, le=1024)
    samples: int = _f(5, "K: masked variants per image when scoring (selective)", ge=1, le=64)
    sampling: Literal["random", "complementary"] = _f(
        "random", "selective: K independent draws, or draws that mask every patch equally often"
    )
    fill: Literal["mean", "zero", "noise", "blur", "token"] = _f(
        "mean", "what masked pixels are replaced with"
    )
    refresh: Literal["auto", "batch", "partition"] = _f(
        "auto",
        "after partition 0: new masks every batch, or one mask per image for the whole partition "
        "(selective and saliency masks are always per partition); auto: batch for random, "
        "block and mixed",
    )
    token_stage: int | None = _f(
        None, "A2MIM: add a learnable mask token at this encoder stage (0 = input)", ge=0, le=5
    )
    ssim_weight: float = _f(1.0, "selective scoring: weight of (1 - SSIM)", ge=0)
    l1_weight: float = _f(1.0, "selective scoring: weight of L1", ge=0)
    largest_component: bool = _f(True, "saliency: keep only the largest foreground component")
    mixed: MixedConfig = MixedConfig()


class FinetuneConfig(_Section):
    epochs: int | None = _f(
        None,
        "passes over the labeled train split (default 5 when steps is not set either)",
        ge=1,
        le=100_000,
    )
    steps: int | None = _f(
        None,
        "optimizer steps, cycling through the train split (instead of epochs)",
        ge=1,
        le=10_000_000,
    )
    evaluations: int | None = _f(
        None,
        "validations (each with a report and a checkpoint), evenly spaced in steps, the last "
        "after the final step; default: one per pass over the train split, at most 10",
        ge=1,
        le=10_000,
    )
    batch_size: int = _f(16, "images per step", ge=1, le=4096)
    lr: float = _f(1e-3, "AdamW peak learning rate", gt=0, le=1)
    weight_decay: float = _f(0.0, "AdamW weight decay", ge=0, le=1)
    schedule: Schedule = _f(
        "cosine", "learning rate over the fine-tuning steps: warm-up, then constant or cosine to 0"
    )
    warmup: float = _f(0.05, "share of the fine-tuning steps spent warming up", ge=0, lt=1)
    precise_bn: bool = _f(
        True,
        "before each validation, recompute the BatchNorm statistics over the train split (no "
        "augmentation) instead of the running average of the last steps: less noisy scores",
    )

    @model_validator(mode="after")
    def _one_budget(self) -> FinetuneConfig:
        if self.epochs is not None and self.steps is not None:
            raise ValueError(
                "give the fine-tuning budget once: finetune.epochs or finetune.steps, not both"
            )
        return self


class ControlArm(_Section):
    name: str = _f(..., "the control's name in tables, tags and MLflow metrics")
    set: dict[str, Any] = _f(..., "dotted key -> value: what this control changes in the spec")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"control name {name!r} may hold letters, digits, '_', '.', '-'")
        return name


class SearchConfig(_Section):
    num_samples: int = _f(
        6, "configurations the sampler proposes (each runs `repeats` times)", ge=1, le=100_000
    )
    repeats: int = _f(
        1,
        "R: runs of every configuration and control, one per repeat seed (weights, masks, "
        "fine-tuning; data and partitions stay); Optuna sees their mean",
        ge=1,
        le=100,
    )
    controls: tuple[str | ControlArm, ...] = _f(
        (),
        "baselines run in every sweep beside the sampler's configurations, R times each: a "
        "strategy name (e.g. none) or {name, set: {key: value}} (see Seeds and controls)",
    )
    max_concurrent: int = _f(
        1, "trials running at once (checked against the cluster)", ge=1, le=10_000
    )
    metric: str = _f("miou", "the metric Optuna optimises")
    mode: Literal["max", "min"] = _f("max", "maximise or minimise the metric")
    score: Literal["last", "best"] = _f(
        "last",
        "a trial's score: its last validation (steady after an annealed schedule) or its best "
        "one (`best/<metric>`: chosen on the validation split, so optimistic); Optuna, the "
        "leaderboard and the report all use it",
    )
    scheduler: Literal["fifo", "asha"] = _f("fifo", "asha stops weak trials early")
    sampler: Literal["tpe", "random", "grid"] = _f(
        "tpe",
        "Optuna sampler; grid: every distinct combination of `choice` values once (`when` "
        "respected)",
    )
    grace_period: int = _f(1, "asha: fine-tuning validations before a trial may be stopped", ge=1)
    max_failures: int = _f(
        1, "retries of a failed trial (it continues from its last checkpoint)", ge=0, le=100
    )
    space: dict[str, Distribution] = _f({}, "dotted key -> distribution (see Search space)")
    storage: str | None = _f(
        None,
        "Optuna storage URL of the sweep's study, named after the sweep (default: sqlite "
        "optuna.db in the experiment directory; a database URL on a cluster; required when "
        "--storage is an object store and the sweep searches); `optuna-dashboard URL` opens it",
    )

    @property
    def score_metric(self) -> str:
        """The metric trials are ranked by (`metric`, or `best/<metric>` with score: best)."""
        return score_key(self.metric, self.score)

    @property
    def trials(self) -> int:
        """Tune trials of the sweep: every configuration and control, `repeats` times each."""
        return trial_count(self.num_samples, len(self.controls), self.repeats)


class ResourcesConfig(_Section):
    cpus_per_trial: float = _f(1.0, "CPUs of the trial's own process", ge=0, le=1024)
    gpus_per_trial: float = _f(
        0.0,
        "GPUs of a trial: whole GPUs in equal shares for its Train workers (DDP), or a fraction "
        "with one worker or train_workers: 0",
        ge=0,
        le=64,
    )
    train_workers: int = _f(
        1,
        "Ray Train workers (DDP) per trial; 0: the trial's own process trains (no Train "
        "start-up, ~15 s less per trial; one worker with cpus_per_trial CPUs and "
        "gpus_per_trial GPUs; for small machines)",
        ge=0,
        le=1024,
    )
    cpus_per_worker: float = _f(1.0, "CPUs per Train worker", gt=0, le=1024)
    scoring_actors: int = _f(
        1, "Ray actors scoring patches between partitions (0: in-process)", ge=0, le=1024
    )
    cpus_per_actor: float = _f(1.0, "CPUs per scoring actor", gt=0, le=1024)
    gpus_per_actor: float = _f(0.0, "GPU fraction per scoring actor", ge=0, le=1)


class TrackingConfig(_Section):
    mlflow_uri: str = _f("sqlite:///mlflow.db", "MLflow tracking URI (sqlite, file, http(s), ...)")
    experiment: str | None = _f(None, "MLflow experiment (default: the sweep's name)")
    keep_checkpoints: int = _f(
        1,
        "checkpoints kept per trial while it trains (resume needs the newest); a finished "
        "trial keeps its last one, with the final weights and without the optimizer state",
        ge=1,
        le=1000,
    )

    @field_validator("mlflow_uri")
    @classmethod
    def _supported_scheme(cls, uri: str) -> str:
        scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
        if scheme not in MLFLOW_SCHEMES:
            raise ValueError(
                f"unsupported MLflow tracking URI {uri!r}; use one of the schemes "
                f"{', '.join(MLFLOW_SCHEMES)} (e.g. sqlite:///mlflow.db or http://host:5000)"
            )
        return uri


class SweepSpec(_Section):
    name: str = _f(
        "sweep",
        "sweep name: the experiment directory and MLflow experiment",
        min_length=1,
        max_length=100,
    )
    seed: int = _f(0, "seeds data, partitions, masks, weights and the sampler", ge=0, le=2**31 - 1)
    repeat: int = _f(
        0,
        "which repeat of its configuration a trial is (search.repeats sets it): repeat r > 0 "
        "seeds weights, masks and fine-tuning from (seed, r); data and partitions follow seed",
        ge=0,
        le=99,
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    masking: MaskingConfig = MaskingConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("name")
    @classmethod
    def _name_is_a_directory_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(
                f"name {name!r} must be usable as a directory name: letters, digits, '_', '.', '-'"
            )
        return name

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        for problem in _cross_field_problems(self):
            raise ValueError(problem)
        return self

    def flat(self) -> dict[str, Any]:
        """The spec as dotted keys (`masking.ratio`: 0.5), for tracking params; search omitted."""
        dumped = self.model_dump(mode="json", exclude={"search"})
        return _flatten(dumped)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _cross_field_problems(spec: SweepSpec) -> list[str]:
    data, masking, model = spec.data, spec.masking, spec.model
    problems = []
    search = spec.search
    if search.scheduler == "asha" and (search.repeats > 1 or search.controls):
        problems.append(
            "search.scheduler: asha stops trials early, so the repeats of a configuration and "
            "its controls would end at different budgets and their mean and paired differences "
            "would mix them; use scheduler: fifo with search.repeats or search.controls"
        )
    if spec.repeat >= search.repeats and search.repeats > 1:
        problems.append(
            f"repeat {spec.repeat} is not one of the {search.repeats} repeats "
            f"(0..{search.repeats - 1}); the sweep sets it, leave it out of the spec"
        )
    if data.image_size % masking.patch_size:
        problems.append(
            f"masking.patch_size {masking.patch_size} must divide data.image_size "
            f"{data.image_size}; pick a divisor such as {_divisors_hint(data.image_size)}"
        )
    if masking.strategy == "mixed" and data.image_size % masking.mixed.patch_size:
        problems.append(
            f"masking.mixed.patch_size {masking.mixed.patch_size} must divide data.image_size "
            f"{data.image_size}; pick a divisor such as {_divisors_hint(data.image_size)}"
        )
    resources = spec.resources
    if resources.train_workers > 1 and resources.gpus_per_trial > 0:
        per_worker = resources.gpus_per_trial / resources.train_workers
        if per_worker < 1 or per_worker != int(per_worker):
            problems.append(
                f"resources.gpus_per_trial {resources.gpus_per_trial} gives each of the "
                f"{resources.train_workers} Train workers {per_worker:g} GPUs, but DDP needs whole "
                "GPUs per worker (two ranks on one GPU fail in NCCL); set gpus_per_trial to a "
                f"multiple of train_workers, e.g. {resources.train_workers}, or train_workers: 1 "
                "to share a GPU"
            )
    if spec.resources.train_workers == 0 and spec.resources.cpus_per_trial == 0:
        problems.append(
            "resources.train_workers: 0 trains in the trial's own process, which has no CPUs: "
            "set resources.cpus_per_trial (e.g. 2 on a laptop)"
        )
    if masking.refresh == "batch" and masking.strategy in MODEL_BASED:
        problems.append(
            f"masking.refresh: batch redraws masks every batch, which only the model-free "
            f"strategies (random, block, mixed) do; {masking.strategy} masks are computed once per "
            "partition from the previous partition's model: use refresh auto or partition"
        )
    stride = 2**model.encoder_depth
    if data.image_size % stride:
        problems.append(
            f"data.image_size {data.image_size} must be a multiple of {stride} for a U-Net with "
            f"model.encoder_depth {model.encoder_depth}; use a multiple of {stride} or a "
            "smaller depth"
        )
    if masking.token_stage is not None and masking.fill == "token":
        problems.append(
            "masking.fill: token already puts the learnable token at the input (stage 0); with "
            "masking.token_stage set, use another input fill such as mean"
        )
    elif masking.token_stage is not None:
        if masking.token_stage > model.encoder_depth:
            problems.append(
                f"masking.token_stage {masking.token_stage} is deeper than model.encoder_depth "
                f"{model.encoder_depth}; use a stage in 0..{model.encoder_depth}"
            )
        else:
            stride = 2**masking.token_stage
            sizes = {"masking.patch_size": masking.patch_size}
            if masking.strategy == "mixed":
                sizes["masking.mixed.patch_size"] = masking.mixed.patch_size
            problems += [
                f"{key} {size} must be a multiple of the stride {stride} of masking.token_stage "
                f"{masking.token_stage}; use a multiple of {stride} or an earlier stage"
                for key, size in sizes.items()
                if size % stride
            ]
    fixed = FIXED_NUM_CLASSES.get(data.source)
    if fixed is not None and data.num_classes != fixed:
        problems.append(
            f"data.num_classes is {data.num_classes} but source {data.source!r} has {fixed} "
            f"classes; set data.num_classes: {fixed}"
        )
    low, high = GENERATED_CLASSES.get(data.source, (2, 1000))
    if not low <= data.num_classes <= high:
        problems.append(
            f"data.num_classes {data.num_classes} is out of range for the {data.source} source; "
            f"use {low}..{high}"
        )
    if data.source not in GENERATED_SOURCES and not data.path:
        problems.append(f"data.path is required for source {data.source!r}; set it to the root")
    if data.source in GENERATED_SOURCES:
        pretrain_images = data.num_images - max(1, round(data.num_images * data.val_fraction))
        if pretrain_images < spec.pretrain.partitions:
            problems.append(
                f"pretrain.partitions {spec.pretrain.partitions} exceeds the {pretrain_images} "
                f"pretraining images; raise data.num_images or lower pretrain.partitions"
            )
    return problems


def _divisors_hint(size: int) -> str:
    divisors = [d for d in range(2, min(size, 64) + 1) if size % d == 0]
    return ", ".join(map(str, divisors[-4:])) or "1"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


# --- loading -------------------------------------------------------------------------------------


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read, override (`KEY=VALUE`, VALUE parsed as YAML) and validate a sweep spec."""
    raw = read_yaml(Path(path))
    keys = {}
    for override in overrides:
        key, value = _parse_override(override)
        _set_dotted(raw, key, value)
        keys[override] = key
    try:
        return validate_spec(raw, source=str(path))
    except SpecError as error:
        # Name the override when the problem is one (a typo in --set is not the file's fault).
        text = str(error)
        named = [override for override, key in keys.items() if f"`{key}`" in text]
        if not named:
            raise
        said = " ".join(f"--set {override}" for override in named)
        prefix = f"{path} is invalid:"
        text = text.removeprefix(prefix) if text.startswith(prefix) else f"\n  - {text}"
        raise SpecError(f"{said} is invalid:{text}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist; check the path")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise SpecError(
            f"{path} is not valid YAML{at}: {getattr(error, 'problem', error)}; "
            "fix the syntax (indentation, colons, quotes)"
        ) from None
    except UnicodeDecodeError:
        raise SpecError(f"{path} is not a text file; give a YAML sweep spec") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(
            f"{path} must hold a mapping of sections (name, data, masking, ...), "
            f"not a {type(raw).__name__}"
        )
    return raw


def validate_spec(raw: dict[str, Any], source: str = "spec") -> SweepSpec:
    from smsweep.space import check_controls, check_space  # they need the validated base spec

    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(f"{source} is invalid:\n" + _explain(error)) from None
    check_space(spec)
    check_controls(spec)
    return spec


def resolve(spec: SweepSpec, params: dict[str, Any]) -> SweepSpec:
    """The spec of one trial: `params` (dotted keys from the search space) substituted in."""
    raw = spec.model_dump(mode="python")
    for key, value in params.items():
        _set_dotted(raw, key, value)
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError("the trial parameters are invalid:\n" + _explain(error)) from None


def _parse_override(override: str) -> tuple[str, Any]:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {override!r} must look like KEY=VALUE, e.g. masking.ratio=0.6")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise SpecError(f"--set {override!r}: the value is not valid YAML; quote it") from None
    return key.strip(), value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"cannot set {key!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


# --- error messages ------------------------------------------------------------------------------


def _explain(error: ValidationError) -> str:
    return "\n".join(f"  - {_explain_one(item)}" for item in error.errors())


def _explain_one(item: dict[str, Any]) -> str:
    import difflib

    loc = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
    kind, got = item["type"], item.get("input")
    if kind == "extra_forbidden":
        parent, _, key = loc.rpartition(".")
        valid = _valid_keys(parent)
        near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"did you mean `{_join(parent, near[0])}`? " if near else ""
        return f"unknown key `{loc}`: {hint}valid keys here: {', '.join(valid)}"
    if kind == "value_error":
        message = str(item.get("ctx", {}).get("error", item["msg"]))
        return f"`{loc}`: {message}" if loc else message
    if kind == "literal_error":
        choices = ", ".join(map(str, _field_at(loc).annotation.__args__))
        return f"`{loc}`: {got!r} is not a valid choice; choose one of: {choices}"
    legal = _legal_range(loc)
    legal = f"; legal: {legal}" if legal else ""
    return f"`{loc}`: {item['msg'].lower()} (got {got!r}){legal}"


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _field_at(loc: str) -> Any:
    model: Any = SweepSpec
    field = None
    for part in loc.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return field if part.isdigit() else None
        field = fields[part]
        model = field.annotation
    return field


def _valid_keys(parent: str) -> list[str]:
    model: Any = SweepSpec if not parent else getattr(_field_at(parent), "annotation", None)
    fields = getattr(model, "model_fields", None)
    if fields is None:  # e.g. a distribution inside search.space
        from smsweep.space import DISTRIBUTION_KEYS

        return sorted(DISTRIBUTION_KEYS)
    return sorted(fields)


def _legal_range(loc: str) -> str:
    field = _field_at(loc)
    if field is None:
        return ""
    bounds = {}
    for meta in field.metadata:
        for name in ("gt", "ge", "lt", "le"):
            if getattr(meta, name, None) is not None:
                bounds[name] = getattr(meta, name)
    words = {"gt": "> {}", "ge": ">= {}", "lt": "< {}", "le": "<= {}"}
    parts = [words[name].format(value) for name, value in bounds.items()]
    annotation = getattr(field.annotation, "__name__", str(field.annotation))
    rendered = " and ".join(parts)
    return f"{annotation} {rendered}".strip()
