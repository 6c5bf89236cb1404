"""Plans variants for the benchmarks, made as copies: a loaded `Plans` (or a trained model's) is never edited in
place, because the same objects are shared by the predictors and networks built from them.

Changes are nested dicts mirroring the plans' JSON (`{"diffusion": {"target": "latent"}}`); a field the plans do not
have fails at once instead of being written into a plans file that training would later refuse.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any


def replace_fields(value: Any, changes: dict[str, Any]) -> Any:
    """A copy of a plans dataclass (or of a dict of them, like `schedule`) with `changes` applied at any depth."""
    if isinstance(value, dict):
        unknown = [key for key in changes if key not in value]
        if unknown:
            raise KeyError(f"no plans entry {unknown} (has: {', '.join(map(str, value))})")
        return {**value, **{key: _changed(value[key], change) for key, change in changes.items()}}
    if not dataclasses.is_dataclass(value):
        raise TypeError(f"cannot apply {changes} to a {type(value).__name__}")
    names = {field.name for field in dataclasses.fields(value) if field.init}
    unknown = [key for key in changes if key not in names]
    if unknown:
        raise KeyError(f"{type(value).__name__} has no field {unknown}")
    return dataclasses.replace(value, **{key: _changed(getattr(value, key), change) for key, change in changes.items()})


def _changed(current: Any, change: Any) -> Any:
    """Nested changes go into dataclasses and dicts; anything else replaces the current value."""
    nested = isinstance(change, dict) and (isinstance(current, dict) or dataclasses.is_dataclass(current))
    return replace_fields(current, change) if nested else change


def dotted_changes(edits: list[str]) -> dict[str, Any]:
    """`["schedule.structure.learning_rate=8e-4"]` -> `{"schedule": {"structure": {"learning_rate": 8e-4}}}`;
    values are JSON."""
    changes: dict[str, Any] = {}
    for edit in edits:
        key, value = edit.split("=", 1)
        *parents, leaf = key.split(".")
        node = changes
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = json.loads(value)
    return changes


def plans_variant(plans, configuration: str, changes: dict[str, Any], plans_name: str | None = None):
    """`plans` with one configuration changed (and, when given, another plans name)."""
    config = replace_fields(plans.configuration(configuration), changes)
    renamed = {"plans_name": plans_name} if plans_name else {}
    return dataclasses.replace(plans, configurations={**plans.configurations, configuration: config}, **renamed)


def model_variant(model, changes: dict[str, Any]):
    """A trained model (`TrainedModel`) whose configuration has `changes`; the weights do not depend on them."""
    return dataclasses.replace(model, plans=plans_variant(model.plans, model.configuration_name, changes))
