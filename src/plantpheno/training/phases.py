"""Training phases: what each phase trains, on which inputs, with which optimisation settings.

A run has one or two phases (:func:`plan_phases`):

* ``train``: ``training.epochs`` epochs of the whole model, or of the head alone on a frozen backbone;
* ``fine_tune`` (``training.fine_tune.epochs > 0``): from the best head on, the last backbone blocks are
  unfrozen and train with the phase's own learning rate and a fresh schedule
  (:mod:`plantpheno.training.fine_tune`).

With ``training.feature_cache`` the frozen part of the network runs once, and a phase trains on what it
produced (:class:`FrozenFeatures`): pooled features for the head, or the activations where the unfrozen
blocks begin, shared by both phases. :class:`~plantpheno.training.loop.TrainState` records the phase
the loop is in, so a resumed run continues in the right one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from plantpheno.config import Config, FineTuneConfig, TrainingConfig
from plantpheno.data.datasets import Loaders
from plantpheno.data.prepared import PreparedData
from plantpheno.reporting import Reporter
from plantpheno.training.bn_stats import training_images_digest
from plantpheno.training.feature_store import FeatureStore

log = logging.getLogger(__name__)

PhaseName = Literal["train", "fine_tune"]


@dataclass(frozen=True)
class Phase:
    """One phase of training: its name, the epoch count the loop reaches at its end, and the ``training`` section
    that sets its optimizer and schedule."""

    name: PhaseName
    end_epoch: int
    training: TrainingConfig
    unfreeze_blocks: int = 0  # backbone blocks (from the output end) this phase makes trainable

    @property
    def epochs(self) -> int:
        """The phase's own length in epochs."""
        return self.training.epochs


def plan_phases(training: TrainingConfig) -> tuple[Phase, ...]:
    """The phases of a run, in order."""
    head = Phase("train", training.epochs, training)
    ft = training.fine_tune
    if not ft.epochs:
        return (head,)
    fine_tune = training.model_copy(update={"epochs": ft.epochs, "learning_rate": ft.learning_rate,
                                            "warmup_epochs": ft.warmup_epochs})
    return head, Phase("fine_tune", training.epochs + ft.epochs, fine_tune, unfreeze_blocks=ft.blocks)


def phase_named(phases: Sequence[Phase], name: str) -> Phase:
    return next(p for p in phases if p.name == name)


def check_phases(model: nn.Module, fine_tune: FineTuneConfig) -> None:
    """Fail now (before the head phase and any run folder) if a fine-tune phase cannot cut this backbone."""
    if fine_tune.epochs:
        from plantpheno.training.fine_tune import last_groups

        last_groups(model, fine_tune.blocks)


def enter(phase: Phase, model: nn.Module) -> None:
    """Make trainable what ``phase`` trains (the fine-tune phase unfreezes the last backbone blocks)."""
    if phase.unfreeze_blocks:
        from plantpheno.training.fine_tune import unfreeze_last

        unfreeze_last(model, phase.unfreeze_blocks)


@dataclass(frozen=True)
class BackboneCut:
    """The backbone as a chain of modules and the index of the first module the fine-tune phase trains."""

    trunk: list[nn.Module]
    index: int


class FrozenFeatures:
    """Inputs of each phase when the frozen part of the network runs once (``training.feature_cache``).

    Without a fine-tune phase (or when the backbone is not a plain chain of modules) the cache holds pooled
    features and the head trains on them; the fine-tune phase then runs on images. With a fine-tune phase
    on a chain backbone, the cache holds the activations where the unfrozen blocks begin: the head phase
    pools its features from them, the fine-tune phase trains the blocks after the cut. The cut and the
    activations are computed once and shared by both phases.
    """

    def __init__(self, model: nn.Module, prepared: PreparedData, loaders: Loaders, config: Config, *,
                 mean: Sequence[float], std: Sequence[float], device: torch.device,
                 reporter: Reporter | None, store: FeatureStore | None = None) -> None:
        self.model, self.prepared, self.loaders, self.config = model, prepared, loaders, config
        self.mean, self.std, self.device, self.reporter = mean, std, device, reporter
        self.store = store  # passes shared with other runs of this process (budget mode), or None
        self._cut: BackboneCut | None = None
        self._cut_found = False
        self._activations: dict[str, torch.Tensor] | None = None
        self._last: tuple[Loaders, nn.Module] | None = None

    def cut(self) -> BackboneCut | None:
        """Where the fine-tune phase's blocks begin (found once, by a probe pass), or None where the
        backbone is not a chain to cut (or no fine-tune phase is planned)."""
        if not self._cut_found:
            from plantpheno.training.fine_tune import fine_tune_cut

            ft = self.config.training.fine_tune
            found = fine_tune_cut(self.model, ft.blocks, self.config.data.image_size) if ft.epochs else None
            self._cut = BackboneCut(*found) if found is not None else None
            self._cut_found = True
        return self._cut

    def inputs(self, phase: Phase) -> tuple[Loaders, nn.Module]:
        """The loaders a phase trains on and the module that trains on them."""
        self._last = self._inputs(phase)
        return self._last

    def validation_source(self) -> tuple[Loaders, nn.Module] | None:
        """The last phase's validation inputs and the module that validated on them, or None before any phase.

        The frozen part never changes, so the whole model's outputs on the validation images are this module's
        outputs on the cached inputs (the trainer's own validation numbers): the final evaluation takes the
        validation predictions (for the temperature) from here instead of running the backbone over the
        images again."""
        return self._last

    def _inputs(self, phase: Phase) -> tuple[Loaders, nn.Module]:
        from plantpheno.training.features import CachedHead, feature_loaders, loaders_over, map_cached
        from plantpheno.training.fine_tune import CutSuffix

        config, model = self.config, self.model
        cut = self.cut()
        if cut is None:
            if phase.name == "fine_tune":
                log.info("fine-tuning %s on images: its features are not a plain chain of modules to cut",
                         config.model.backbone)
                return self.loaders, model
            return (feature_loaders(self.prepared, self.loaders, model, config.data,
                                    views=config.training.feature_cache_views, seed=config.seed, mean=self.mean,
                                    std=self.std, device=self.device, reporter=self.reporter, store=self.store,
                                    store_key=self._store_key("pooled")),
                    CachedHead(model, dropout=config.model.dropout))
        acts = self._activations_at(cut)
        suffix = CutSuffix(model, cut.trunk[cut.index:])
        if phase.name == "fine_tune":
            return loaders_over(acts, self.loaders, seed=config.seed), suffix
        pooled = map_cached(acts, lambda a: model.forward_head(suffix.forward_trunk(a), pre_logits=True), model,
                            device=self.device)
        return loaders_over(pooled, self.loaders, seed=config.seed), CachedHead(model, dropout=config.model.dropout)

    def _activations_at(self, cut: BackboneCut) -> dict[str, torch.Tensor]:
        if self._activations is None:
            from plantpheno.training.features import cache_inputs
            from plantpheno.training.fine_tune import Prefix

            config = self.config
            self._activations = cache_inputs(self.prepared, self.loaders, self.model, config.data,
                                             views=config.training.feature_cache_views, seed=config.seed,
                                             fn=Prefix(cut.trunk[:cut.index]), mean=self.mean, std=self.std,
                                             device=self.device, reporter=self.reporter, store=self.store,
                                             store_key=self._store_key(f"cut {cut.index}"))
            mib = sum(t.numel() * t.element_size() for t in self._activations.values()) / 2**20
            log.info("cached the frozen backbone's activations before module %d of %d: %.0f MiB", cut.index,
                     len(cut.trunk), mib)
        return self._activations

    def _store_key(self, where: str) -> tuple[object, ...] | None:
        """What fixes the frozen part's output for an image (:mod:`plantpheno.training.feature_store`); None (do not
        share) for randomly initialised weights, which depend on the run's seed, and for augmented views."""
        config = self.config
        if self.store is None or config.model.pretrained is False or config.training.feature_cache_views > 1:
            return None
        # init_from: the parent's weights replace the pretrained ones (runs started from one parent share a pass)
        bands = config.data.bands, (self.prepared.band_norm if config.data.bands is not None else None)
        # model.bn_stats: recompute: the BatchNorm statistics come from this run's training images
        bn = ("bn", training_images_digest(self.prepared)) if config.model.bn_stats == "recompute" else ("bn", "kept")
        return (where, config.model.backbone, str(config.model.pretrained), config.model.init_from, bn,
                config.data.image_size, config.data.resize, tuple(self.mean), tuple(self.std), self.device.type,
                *((tuple(b.model_dump_json() for b in bands[0]), bands[1]) if bands[0] is not None else ()))
