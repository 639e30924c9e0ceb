"""Spec errors in words, and the dotted keys they name.

Pydantic reports a location and a code; a researcher needs the dotted key (`masking.ratio`), what
is wrong with it and what to write instead: the nearest valid key for a typo, the choices for a
literal, the legal range for a bound. Nothing here knows the spec's sections: the root model is an
argument, so the schema (config.py) and the search space (space.py) share one renderer.
"""

from __future__ import annotations

import difflib
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from smsweep.errors import SpecError
from smsweep.spec.distribution import DISTRIBUTION_KEYS


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys: {"masking": {"ratio": 0.5}} -> {"masking.ratio": 0.5}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set `key` ("masking.ratio") in a raw spec tree, creating sections on the way."""
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"cannot set {key!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def explain(error: ValidationError, root: type[BaseModel]) -> str:
    """One line per problem of `error`, raised while validating `root` (e.g. SweepSpec): the
    dotted key, what is wrong, and the nearest valid key, the choices or the legal range."""
    return "\n".join(f"  - {_explain_one(item, root)}" for item in error.errors())


def _explain_one(item: dict[str, Any], root: type[BaseModel]) -> str:
    loc = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
    kind, got = item["type"], item.get("input")
    if kind == "extra_forbidden":
        parent, _, key = loc.rpartition(".")
        valid = _valid_keys(parent, root)
        near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"did you mean `{_join(parent, near[0])}`? " if near else ""
        return f"unknown key `{loc}`: {hint}valid keys here: {', '.join(valid)}"
    if kind == "value_error":
        message = str(item.get("ctx", {}).get("error", item["msg"]))
        return f"`{loc}`: {message}" if loc else message
    if kind == "literal_error":
        choices = ", ".join(map(_as_yaml, _field_at(loc, root).annotation.__args__))
        return f"`{loc}`: {got!r} is not a valid choice; choose one of: {choices}"
    legal = _legal_range(loc, root)
    legal = f"; legal: {legal}" if legal else ""
    return f"`{loc}`: {item['msg'].lower()} (got {got!r}){legal}"


def _as_yaml(value: Any) -> str:
    """A choice as it is written in a spec (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _field_at(loc: str, root: type[BaseModel]) -> Any:
    model: Any = root
    field = None
    for part in loc.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return field if part.isdigit() else None
        field = fields[part]
        model = _model_of(field.annotation)
    return field


def _model_of(annotation: Any) -> Any:
    """The model of an optional section (`DataConfig | None` -> DataConfig), else `annotation`."""
    models = [arg for arg in get_args(annotation) if hasattr(arg, "model_fields")]
    return models[0] if models else annotation


def _valid_keys(parent: str, root: type[BaseModel]) -> list[str]:
    model: Any = root if not parent else getattr(_field_at(parent, root), "annotation", None)
    model = _model_of(model)
    fields = getattr(model, "model_fields", None)
    if fields is None:  # e.g. a distribution inside search.space
        return sorted(DISTRIBUTION_KEYS)
    return sorted(fields)


def _legal_range(loc: str, root: type[BaseModel]) -> str:
    field = _field_at(loc, root)
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
