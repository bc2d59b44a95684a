"""The ladder of budget mode: which candidates are tried, in which order, and why. The one place it is written.

Every candidate starts from the shipped recipe of the task (``classify`` or ``traits``: bundled ImageNet weights,
frozen backbone, features cached once, head trained on them, optionally the last blocks fine-tuned on cached
activations) and changes one or two things. Rungs run cheapest first (costs on a 2-core AMD EPYC, torch 2.14.1;
benchmarks/results/backbone_pass.md, recipe_choice.md): the backbone pass over every train+val image (Lite0 at
224 px: 22 ms an image) dominates a candidate; a head on cached features trains in seconds; fine-tuning one
block costs about 3.7 ms an image an epoch, two blocks 12 ms. A rung whose backbone pass an earlier rung made
reuses it (:class:`plantpheno.training.feature_store.FeatureStore`), so trying head-only before fine-tuning costs
almost nothing once the pass exists.

TTA is not a rung of its own here: it is tried last, on the leader, as that candidate with ``evaluation.tta:
flips`` (same cached passes, same seed: the same weights, evaluated with the flipped views averaged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

LITE0, LITE1, LITE2 = "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"

# Published multiply-adds of the bundled backbones at their native input sizes (GFLOPs, timm's model cards); a pass
# costs about in proportion (size / native)^2 times these.
BACKBONES: dict[str, tuple[int, float]] = {
    LITE0: (224, 0.41),
    LITE1: (240, 0.63),
    LITE2: (260, 0.90),
}


@dataclass(frozen=True)
class Candidate:
    """One setting to try: what changes from the task's recipe, and the reason it is on the ladder."""

    backbone: str
    image_size: int
    blocks: int  # backbone blocks fine-tuned after the head: 0 = head only
    resize: Literal["recipe", "other"] = "recipe"  # the recipe's resize mode, or the other of crop/pad
    tta: Literal["none", "flips"] = "none"
    reason: str = ""

    @property
    def relative_cost(self) -> float:
        """A backbone pass's cost against Lite0 at 224 px."""
        native, gflops = BACKBONES[self.backbone]
        return gflops / BACKBONES[LITE0][1] * (self.image_size / native) ** 2

    def name(self, resize: str) -> str:
        short = self.backbone.removeprefix("tf_efficientnet_")
        tune = "head" if self.blocks == 0 else f"ft{self.blocks}"
        return f"{short}-{self.image_size}-{resize}-{tune}" + ("-tta" if self.tta != "none" else "")

    def overrides(self, *, resize: str, fine_tune_epochs: int) -> dict[str, Any]:
        """Dotted config overrides of this candidate (on top of the recipe's sections)."""
        out: dict[str, Any] = {"model.backbone": self.backbone, "model.pretrained": "bundled",
                               "model.freeze_backbone": True, "training.feature_cache": True,
                               "data.image_size": self.image_size, "data.resize": resize,
                               "evaluation.tta": self.tta,
                               "training.fine_tune.epochs": fine_tune_epochs if self.blocks else 0}
        if self.blocks:
            out["training.fine_tune.blocks"] = self.blocks
        return out


# The ladder, cheapest first: one row a rung. Each reason says what the rung can win over the rungs before it.
#  backbone, input px, blocks fine-tuned (0: head only), resize ("other": the other of crop/pad), reason
RUNGS: tuple[tuple[str, int, int, Literal["recipe", "other"], str], ...] = (
    (LITE0, 224, 0, "recipe", "cheapest: one pass of the smallest backbone at its native size, a head trained in "
                              "seconds"),
    (LITE0, 224, 1, "recipe", "the last block adapts to plant images; tied with two blocks on PlantVillage's "
                              "validation split at a third of the fine-tune cost "
                              "(benchmarks/results/recipe_choice.md)"),
    (LITE0, 224, 2, "recipe", "the shipped recipe (classify, traits): two blocks won by 5-fold CV on PlantVillage"),
    (LITE0, 224, 2, "other", "only when aspect ratios vary: pad keeps the whole plant, crop keeps more pixels of the "
                             "centre"),
    (LITE1, 240, 0, "recipe", "a deeper, wider backbone: 1.5x the pass, better ImageNet features"),
    (LITE0, 300, 0, "recipe", "a larger input: small lesions and thin organs keep more pixels; 1.8x the pass"),
    (LITE2, 260, 0, "recipe", "the largest bundled backbone: 2.2x the pass"),
    (LITE1, 240, 2, "recipe", "fine-tuning the deeper backbone, on the pass its head-only rung made"),
    (LITE0, 224, 3, "recipe", "three blocks: more adaptation to very un-ImageNet-like photos, ~2x two blocks' cost"),
    (LITE2, 260, 2, "recipe", "fine-tuning the largest backbone, on the pass its head-only rung made"),
)

LADDER: tuple[Candidate, ...] = tuple(Candidate(backbone, size, blocks, resize, reason=reason)
                                      for backbone, size, blocks, resize, reason in RUNGS)

TTA_REASON = ("test-time augmentation on the leader: flipped views averaged; the same weights, 4x the "
              "evaluation passes")


def ladder_for(*, aspect_varies: bool) -> list[Candidate]:
    """The ladder for this data: the resize rung only where aspect ratios vary (where crop and pad differ)."""
    return [c for c in LADDER if c.resize == "recipe" or aspect_varies]


def resize_of(candidate: Candidate, recipe_resize: str) -> str:
    """The candidate's resize mode: the recipe's, or the other one of crop and pad."""
    if candidate.resize == "recipe":
        return recipe_resize
    return "pad" if recipe_resize != "pad" else "crop"
