"""Loading a sweep spec: read the YAML, apply `--set` overrides, validate it against the schema
(config.py), its cross-field rules (rules.py) and its search space (space.py), and resolve one
trial's spec from sampled parameters. Errors are SpecError with every problem in words
(explain.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from smsweep.errors import SpecError
from smsweep.spec.config import SweepSpec
from smsweep.spec.explain import explain, set_dotted
from smsweep.spec.space import check_controls, check_space


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read, override (`KEY=VALUE`, VALUE parsed as YAML) and validate a sweep spec."""
    raw = read_yaml(Path(path))
    keys = {}
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(raw, key, value)
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
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(f"{source} is invalid:\n" + explain(error, SweepSpec)) from None
    check_space(spec)
    check_controls(spec)
    return spec


def resolve(spec: SweepSpec, params: dict[str, Any]) -> SweepSpec:
    """The spec of one trial: `params` (dotted keys from the search space) substituted in."""
    raw = spec.model_dump(mode="python")
    for key, value in params.items():
        set_dotted(raw, key, value)
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError("the trial parameters are invalid:\n" + explain(error, SweepSpec)) from None


def parse_override(override: str) -> tuple[str, Any]:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {override!r} must look like KEY=VALUE, e.g. masking.ratio=0.6")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise SpecError(f"--set {override!r}: the value is not valid YAML; quote it") from None
    return key.strip(), value
