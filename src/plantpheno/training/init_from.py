"""Starting a new run from an existing model's weights (``model.init_from``), classes matched by name.

The backbone's weights are copied as they are. The head's rows follow the classes: a class the parent model
knew keeps its row (same classes in another order, or a subset), a class it did not know keeps the fresh row the
new head was built with, and a parent class the new run does not have is dropped. So a model trained on lab photos
can be fine-tuned on a few labelled field photos, with its classes extended where the field has more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from plantpheno.errors import ConfigError
from plantpheno.records.model_meta import ModelMeta


def check_parent(parent_meta: ModelMeta, *, task: str, backbone: str, origin: str) -> None:
    """A ConfigError when the parent model is of another task or backbone than the run to start from it."""
    problems = []
    if parent_meta.task != task:
        problems.append(f"it is a {parent_meta.task} model and this config trains {task}")
    if parent_meta.backbone != backbone:
        problems.append(f"its backbone is {parent_meta.backbone!r} and this config's model.backbone is "
                        f"{backbone!r}")
    if problems:
        raise ConfigError(f"model.init_from {origin}: " + "; ".join(problems) + " (start from a model of the same "
                          "task and backbone, or set model.backbone to the parent's)")


def load_parent_weights(model: nn.Module, state: Mapping[str, torch.Tensor], parent_meta: ModelMeta, *,
                        class_names: Sequence[str] | None, origin: str) -> dict[str, Any]:
    """Copy ``state`` (the parent's weights) into ``model`` in place, the head's rows matched by class name;
    returns what was kept, added and dropped (for the lineage record)."""
    head = _head_prefix(model)
    own = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, value in own.items():
        if head is not None and key.startswith(head + "."):
            continue
        if key not in state or tuple(state[key].shape) != tuple(value.shape):
            found = "missing" if key not in state else f"shaped {tuple(state[key].shape)}"
            raise ConfigError(f"model.init_from {origin}: its weights do not fit this model ({key} is {found}, "
                              f"expected {tuple(value.shape)}); is it the same backbone?")
        loaded[key] = state[key]
    record: dict[str, Any] = {}
    if head is not None:
        rows, record = _head_rows(head, own, state, parent_meta, class_names, origin)
        loaded.update(rows)
    model.load_state_dict({**own, **loaded})
    return record


def _head_prefix(model: nn.Module) -> str | None:
    """The state-dict prefix of timm's classifier (``fc``, ``head.fc``, ``classifier``...)."""
    getter = getattr(model, "get_classifier", None)
    classifier = getter() if getter is not None else None
    for name, module in model.named_modules():
        if module is classifier and name:
            return name
    return None


def _head_rows(head: str, own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
               parent_meta: ModelMeta, class_names: Sequence[str] | None,
               origin: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    keys = [k for k in own if k.startswith(head + ".")]
    parent_names = list(parent_meta.class_names or [])
    if class_names is None:  # a trait: one output, copied as it is
        missing = [k for k in keys if k not in state or state[k].shape != own[k].shape]
        if missing:
            raise ConfigError(f"model.init_from {origin}: its head does not fit this model ({', '.join(missing)})")
        return {k: state[k] for k in keys}, {}
    index = {name: i for i, name in enumerate(parent_names)}
    rows: dict[str, torch.Tensor] = {}
    for key in keys:
        fresh = own[key].clone()
        if key not in state or state[key].shape[0] != len(parent_names) or state[key].shape[1:] != fresh.shape[1:]:
            raise ConfigError(f"model.init_from {origin}: its head {key} does not have one row per class of its "
                              f"{len(parent_names)} classes")
        for i, name in enumerate(class_names):
            if name in index:
                fresh[i] = state[key][index[name]]
        rows[key] = fresh
    return rows, {"classes_kept": [n for n in class_names if n in index],
                  "classes_new": [n for n in class_names if n not in index],
                  "classes_dropped": [n for n in parent_names if n not in set(class_names)]}
