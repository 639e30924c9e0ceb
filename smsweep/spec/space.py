"""The search space of a sweep: `search.space` maps a dotted spec key to a distribution.

    search:
      space:
        masking.strategy: {choice: [random, selective, saliency]}
        masking.ratio: {uniform: [0.4, 0.75]}
        masking.samples: {randint: [1, 7], when: {masking.strategy: [selective]}}

`randint` bounds are inclusive on both ends. `when` makes a parameter conditional: it is sampled
only for trials whose other keys take one of the listed values (define-by-run in Optuna);
otherwise the trial keeps the spec's value. Validation makes sure that every key exists and that
every value a distribution can produce gives a valid trial spec, so a sweep never fails on trial 37
for a typo.
"""

from __future__ import annotations

import copy
import difflib
import itertools
from typing import Any

from pydantic import ValidationError

from smsweep.errors import SpecError
from smsweep.spec import registry
from smsweep.spec.config import SweepSpec
from smsweep.spec.distribution import Distribution
from smsweep.spec.explain import explain, set_dotted

SEARCHABLE_SECTIONS = ("data", "model", "pretrain", "masking", "finetune", "mrm")
_MAX_COMBINATIONS = 4096  # above this, values are checked one key at a time


def leaf_keys(spec: SweepSpec) -> list[str]:
    """Dotted keys that a search space may name."""
    return [key for key in spec.flat() if key.split(".")[0] in SEARCHABLE_SECTIONS]


def sample(trial: Any, space: dict[str, Distribution], fixed: dict[str, Any]) -> dict[str, Any]:
    """One trial's parameters, define-by-run: `trial` is an Optuna trial (suggest_* methods).

    Keys are drawn in an order where every `when` key comes before the keys it conditions; a
    conditional key is drawn only when its conditions hold, comparing with the drawn value or,
    for keys not searched, the spec's fixed value (`fixed`: the spec's dotted keys). A key whose
    condition key is searched but was itself not drawn stays inactive.
    """
    params: dict[str, Any] = {}
    for key in draw_order(space):
        dist = space[key]
        conditions = (dist.when or {}).items()
        if all(
            (params[k] if k in params else (None if k in space else fixed.get(k))) in allowed
            for k, allowed in conditions
        ):
            params[key] = _suggest(trial, key, dist)
    return params


def _suggest(trial: Any, key: str, dist: Distribution) -> Any:
    if dist.choice is not None:
        return trial.suggest_categorical(key, list(dist.choice))
    low, high = dist.args
    if dist.randint is not None:
        return trial.suggest_int(key, low, high)
    return trial.suggest_float(key, low, high, log=dist.loguniform is not None)


def draw_order(space: dict[str, Distribution]) -> list[str]:
    """Keys with every searched `when` key before the keys it conditions."""
    order: list[str] = []
    pending = list(space)
    while pending:
        ready = [
            k for k in pending if all(c in order or c not in space for c in space[k].when or {})
        ]
        if not ready:
            raise SpecError(
                f"search.space `when` conditions form a cycle among {sorted(pending)}; "
                "make one of them unconditional"
            )
        order += ready
        pending = [k for k in pending if k not in ready]
    return order


def check_space(spec: SweepSpec) -> None:
    """Raise SpecError unless every key exists and every producible value validates."""
    space = spec.search.space
    keys = leaf_keys(spec)
    for key, dist in space.items():
        _check_key(key, keys, f"search.space key `{key}`")
        for cond_key, allowed in (dist.when or {}).items():
            _check_condition(spec, key, cond_key, allowed, keys)
    draw_order(space)
    if spec.search.sampler == "grid":
        _check_grid(spec)
    base = _without_search(spec)
    for key, dist in space.items():
        active = _conditions_met(dist, space)
        for value in dist.values_to_check():
            _validate_trial(base, {**active, key: value}, f"search.space `{key}` value {value!r}")
    candidates = {key: dist.values_to_check() for key, dist in space.items()}
    count = 1
    for values in candidates.values():
        count *= len(values)
    if 1 < count <= _MAX_COMBINATIONS and len(space) > 1:
        for combo in itertools.product(*candidates.values()):
            params = _active_params(dict(zip(candidates, combo, strict=True)), space)
            _validate_trial(base, params, f"search.space combination {params}")


def grid_points(space: dict[str, Distribution], fixed: dict[str, Any]) -> list[dict[str, Any]]:
    """Every distinct trial of a grid, in product order: each combination of the `choice`
    values, with a conditional key left out where its `when` does not hold (as `sample` leaves
    it out), and combinations that are then equal kept once. `fixed`: the spec's dotted keys."""
    order = draw_order(space)
    points: list[dict[str, Any]] = []
    for combo in itertools.product(*(space[key].choice or () for key in order)):
        drawn = dict(zip(order, combo, strict=True))
        point: dict[str, Any] = {}
        for key in order:
            conditions = (space[key].when or {}).items()
            if all(
                (point.get(k) if k in space else fixed.get(k)) in allowed
                for k, allowed in conditions
            ):
                point[key] = drawn[key]
        if point not in points:
            points.append(point)
    return points


def _check_grid(spec: SweepSpec) -> None:
    space = spec.search.space
    bad = [key for key, dist in space.items() if dist.choice is None]
    if not space or bad:
        raise SpecError(
            f"search.sampler: grid needs every search.space key to be a `choice` "
            f"({', '.join(bad) or 'the space is empty'}); list the values to try"
        )
    size = len(grid_points(space, spec.flat()))
    if spec.search.num_samples != size:
        raise SpecError(
            f"search.sampler: grid has {size} distinct combinations but search.num_samples "
            f"is {spec.search.num_samples}; set search.num_samples: {size}"
        )


def _check_key(key: str, keys: list[str], what: str) -> None:
    if key in keys:
        return
    section = key.split(".")[0]
    if section not in SEARCHABLE_SECTIONS:
        raise SpecError(
            f"{what} cannot be searched: only keys under {', '.join(SEARCHABLE_SECTIONS)} can"
        )
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    hint = f"did you mean `{near[0]}`? " if near else ""
    raise SpecError(
        f"{what} is not a key of the spec; {hint}write it as section.key, e.g. masking.ratio"
    )


def _check_condition(
    spec: SweepSpec, key: str, cond_key: str, allowed: tuple[Any, ...], keys: list[str]
) -> None:
    what = f"search.space `{key}` when-condition `{cond_key}`"
    _check_key(cond_key, keys, what)
    if cond_key == key:
        raise SpecError(f"{what}: a parameter cannot be conditional on itself; drop the when")
    if not allowed:
        raise SpecError(f"{what} lists no values; give the values that enable `{key}`")
    cond_dist = spec.search.space.get(cond_key)
    if cond_dist is not None:
        possible = cond_dist.values_to_check() if cond_dist.choice is not None else None
        if possible is not None:
            missing = [value for value in allowed if value not in possible]
            if missing:
                raise SpecError(
                    f"{what}: {missing} can never occur; `{cond_key}` is searched over {possible}"
                )
        return
    fixed = spec.flat()[cond_key]
    if fixed not in allowed:
        raise SpecError(
            f"{what}: `{key}` would never be searched, because `{cond_key}` is fixed to "
            f"{fixed!r}, not one of {list(allowed)}; search `{cond_key}` too or drop the when"
        )


def _conditions_met(dist: Distribution, space: dict[str, Distribution]) -> dict[str, Any]:
    """Values for the condition keys that make `dist` active (the first allowed of each)."""
    return {
        cond_key: allowed[0] for cond_key, allowed in (dist.when or {}).items() if cond_key in space
    }


def _active_params(params: dict[str, Any], space: dict[str, Distribution]) -> dict[str, Any]:
    """Drop conditional parameters whose conditions the other values do not meet."""
    active = {}
    for key, value in params.items():
        when = space[key].when or {}
        if all(
            params.get(cond_key) in allowed
            for cond_key, allowed in when.items()
            if cond_key in params
        ):
            active[key] = value
    return active


def _without_search(spec: SweepSpec) -> dict[str, Any]:
    raw = spec.model_dump(mode="python")
    raw["search"] = {**raw["search"], "space": {}}
    return raw


def _validate_trial(
    base: dict[str, Any],
    params: dict[str, Any],
    what: str,
    fix: str = "narrow the distribution or fix the spec",
) -> None:
    raw = copy.deepcopy(base)
    for key, value in params.items():
        set_dotted(raw, key, value)
    try:
        SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(
            f"{what} gives an invalid trial; {fix}:\n{explain(error, SweepSpec)}"
        ) from None


def control_params(spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """search.controls as name -> the dotted keys it sets (a strategy name sets the strategy)."""
    controls: dict[str, dict[str, Any]] = {}
    for control in spec.search.controls:
        if isinstance(control, str):
            controls[control] = {"masking.strategy": control}
        else:
            controls[control.name] = dict(control.set)
    return controls


def check_controls(spec: SweepSpec) -> None:
    """Raise SpecError unless every control has its own name, sets existing keys and gives a
    valid trial."""
    for control in spec.search.controls:
        if isinstance(control, str) and control not in registry.STRATEGIES:
            near = difflib.get_close_matches(control, registry.names(), n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise SpecError(
                f"search.controls `{control}` is not a masking strategy; {hint}name one of "
                f"{', '.join(registry.names())}, or give {{name: ..., set: {{key: value}}}}"
            )
    names = [c if isinstance(c, str) else c.name for c in spec.search.controls]
    doubled = sorted({name for name in names if names.count(name) > 1})
    if doubled:
        raise SpecError(
            f"search.controls names {', '.join(doubled)} more than once; give each control its "
            "own name (e.g. {name: random_partition, set: {masking.refresh: partition}})"
        )
    keys = leaf_keys(spec)
    base = _without_search(spec)
    for name, params in control_params(spec).items():
        if not params:
            raise SpecError(
                f"search.controls `{name}` sets nothing; give it what it changes, e.g. "
                "set: {masking.strategy: random}"
            )
        for key in params:
            _check_key(key, keys, f"search.controls `{name}` key `{key}`")
        _validate_trial(base, params, f"search.controls `{name}`", fix="fix what it sets")
