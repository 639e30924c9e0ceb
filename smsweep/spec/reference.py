"""Render the sweep-spec reference (docs/spec-reference.md) from the config models, so the docs
match the code.

python -m smsweep.spec.reference   # the tables between the markers of docs/spec-reference.md
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from smsweep.spec import registry
from smsweep.spec.config import SweepSpec


def reference_markdown() -> str:
    top = [
        (name, field)
        for name, field in SweepSpec.model_fields.items()
        if not _is_model(field.annotation)
    ]
    blocks = [_table("top level", "", top)]
    for name, field in SweepSpec.model_fields.items():
        if _is_model(field.annotation):
            blocks.extend(_section(name, field.annotation))
    blocks.append(strategies_markdown())
    return "\n\n".join(blocks) + "\n"


def strategies_markdown() -> str:
    """The masking strategies as `smsweep.spec.registry` holds them (plugins' ones included)."""
    rows = [
        "**masking strategies** (`masking.strategy`)",
        "",
        "| strategy | what it masks | masks from the model | objectives | masking.refresh |",
        "|---|---|---|---|---|",
    ]
    for name, entry in registry.STRATEGIES.items():
        rows.append(
            f"| `{name}` | {entry.summary} | {'yes' if entry.needs_model else 'no'} | "
            f"{', '.join(entry.objectives)} | auto, {', '.join(entry.refresh)} |"
        )
    return "\n".join(rows)


def _section(prefix: str, model: type[BaseModel]) -> list[str]:
    plain = [(name, f) for name, f in model.model_fields.items() if not _is_model(f.annotation)]
    blocks = [_table(f"`{prefix}`", prefix + ".", plain)]
    for name, field in model.model_fields.items():
        if _is_model(field.annotation):
            blocks.extend(_section(f"{prefix}.{name}", field.annotation))
        elif _own_optional(field) is not None:
            blocks.extend(_section(f"{prefix}.{name}", _own_optional(field)))
    return blocks


def _own_optional(field: Any) -> type[BaseModel] | None:
    """The section of a `Section | None` key that no top-level key shares (search.confirm;
    not pretrain.data, which has the keys of `data`)."""
    args = get_args(field.annotation)
    models = [arg for arg in args if _is_model(arg)]
    if len(models) != 1 or type(None) not in args or get_origin(field.annotation) is tuple:
        return None
    shared = any(f.annotation is models[0] for f in SweepSpec.model_fields.values())
    return None if shared else models[0]


def _table(title: str, prefix: str, fields: list[tuple[str, Any]]) -> str:
    rows = [f"**{title}**", "", "| key | default | legal values | meaning |", "|---|---|---|---|"]
    for name, field in fields:
        rows.append(
            f"| `{prefix}{name}` | `{_default(field)}` | {_legal(field)} | "
            f"{field.description or ''} |"
        )
    return "\n".join(rows)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _default(field: Any) -> str:
    value = field.default
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple) and value:
        return f"[{', '.join(map(str, value))}]"
    return str(value)


def _legal(field: Any) -> str:
    if (field.json_schema_extra or {}).get("choices") == "masking strategies":
        return ", ".join(f"`{name}`" for name in registry.names())
    annotation = field.annotation
    args = getattr(annotation, "__args__", None)
    if get_origin(annotation) is tuple and args and get_origin(args[0]) is Literal:
        return "list of " + ", ".join(f"`{arg}`" for arg in get_args(args[0]))
    models = [arg for arg in args or () if _is_model(arg)]
    if _own_optional(field) is not None:
        return "a section (its keys below), or null"
    if models:
        names = [n for n, f in SweepSpec.model_fields.items() if f.annotation is models[0]]
        return f"a section with the keys of `{names[0] if names else models[0].__name__}`, or null"
    if "Literal" in str(annotation) and args:
        return ", ".join(f"`{str(arg).lower() if isinstance(arg, bool) else arg}`" for arg in args)
    bounds = []
    for meta in field.metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{symbol} {getattr(meta, attr)}")
    kind = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return f"{kind} {' and '.join(bounds)}".strip().replace("|", "or")


if __name__ == "__main__":
    print(reference_markdown(), end="")
