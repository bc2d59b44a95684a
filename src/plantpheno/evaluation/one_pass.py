"""One backbone pass for a split's predictions and its pooled features.

The evaluation of a split needs the network's outputs (the predictions, TTA-averaged when asked) and, for the OOD
detector, the pooled penultimate features of the same images. Both come from one pass: ``forward_features`` ->
pool (timm's ``forward_head(..., pre_logits=True)``) -> the classifier, which is what ``model(x)`` computes in eval
mode, with the pooled features kept on the way. Passing the images a second time for the features had taken about
70 s of a 124 s evaluation of the PlantVillage subset on a 2-core EPYC at a load of 8.5; side by side on its 343 test
images the one pass is 1.71x faster in wall time (1.88x in CPU time) than the two, with the same outputs to the bit
(``benchmarks/eval_pass.py``, ``benchmarks/results/eval_pass.md``).

With TTA the features are those of the image as it is (the identity view): the detector was fitted on the
un-augmented images' features (:func:`plantpheno.training.unknowns.pooled` applies no TTA), and its logit scores
take the identity view's logits (the head applied to those features), as before.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from plantpheno.evaluation.tta import view, views

Pooled = Callable[[torch.Tensor], torch.Tensor]


def feature_parts(model: nn.Module) -> tuple[Pooled, nn.Module] | None:
    """``(images -> pooled pre-logits features, the classifier)`` of a timm network, whose eval-mode output is the
    classifier applied to those features; None where the network is not built so (a distilled model's pair of
    heads, a module without ``forward_features`` such as the feature cache's head), which then keeps two passes."""
    head = model.get_classifier() if callable(getattr(model, "get_classifier", None)) else None
    if not isinstance(head, nn.Module) or not all(callable(getattr(model, name, None))
                                                  for name in ("forward_features", "forward_head")):
        return None
    return (lambda images: model.forward_head(model.forward_features(images), pre_logits=True)), head


def outputs_and_features(model: nn.Module, images: torch.Tensor, mode: str,
                         parts: tuple[Pooled, nn.Module] | None) -> tuple[torch.Tensor, torch.Tensor,
                                                                          torch.Tensor | None]:
    """``(raw outputs averaged over the TTA views of mode, raw outputs of the identity view, pooled features of the
    identity view)`` as float32, from one pass per view; the features are None without ``parts``
    (:func:`feature_parts`), and the outputs then are :func:`plantpheno.evaluation.tta.tta_outputs`'."""
    names = views(mode)
    if parts is None:
        plain, features = model(images).float(), None
    else:
        pooled, head = parts
        kept = pooled(images)
        plain, features = head(kept).float(), kept.float()
    if len(names) == 1:
        return plain, plain, features
    total = plain.clone()
    for name in names[1:]:
        total += model(view(images, name)).float()
    return total / len(names), plain, features
