"""The one path from a config to a trained, evaluated run: ``train()``, ``resume()`` and ``evaluate_run()``.

    config -> data, task, model, loaders (_setup)  -> run directory  -> tracking
           -> each training phase (TrainingLoop.fit)    -> evaluation     -> registry

Messages go to the ``reporter`` the caller gives (the command line prints them); without one they go to
Python's logging.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import plantpheno.distributed as distributed
import plantpheno.parent_model as parent_model
import plantpheno.source_eval as source_eval
from plantpheno.files.atomic import remove_stale_temp_files_under
from plantpheno.config import Config, config_to_dict, validate_config
from plantpheno.band_config import band_names
from plantpheno.data.band_loaders import build_band_loaders
from plantpheno.data.bands import band_meta
from plantpheno.data.datasets import Loaders, PreparedData, build_loaders, close_loaders, prepare_data, write_data_files
from plantpheno.data.doctor.findings import DataCheckReport
from plantpheno.data.sources import SPLITS
from plantpheno.device import amp_dtype, check_every, resolve_device, seed_everything, set_threads
from plantpheno.distributed import DistContext
from plantpheno.run.epochlog import read_epoch_log
from plantpheno.errors import ConfigError, DataError, RunDirError, StorageError, TrainingError
from plantpheno.evaluation.html_report import write_report_or_warn
from plantpheno.evaluation.plots import plot_training_curves
from plantpheno.evaluation.run_eval import evaluate_split
from plantpheno.models import build_model, input_format, normalization, to_channels_last, wants_channels_last
from plantpheno.records.evaluation import Evaluation
from plantpheno.records.model_meta import ModelMeta, build_model_meta
from plantpheno.reporting import Reporter, default_reporter
from plantpheno.run.folder import RunDir, check_output_dir, create_run_dir
from plantpheno.tracking.lifecycle import log_run_results, open_run_tracking
from plantpheno.tracking.session import SystemMonitor, TrackerSet
from plantpheno.version import __version__
from plantpheno.training.callbacks import (
    Checkpointer,
    Console,
    EarlyStopping,
    MetricsLog,
    ReplicaCheck,
    TrackerCallback,
)
from plantpheno.training.checkpoint import load_checkpoint, restore_rng
from plantpheno.training.feature_store import FeatureStore
from plantpheno.training.features import CachedHead
from plantpheno.training.losses import build_loss
from plantpheno.training.optim import build_optimizer, build_scheduler, steps_per_batch
from plantpheno.training.phases import FrozenFeatures, Phase, check_phases, enter, plan_phases
from plantpheno.training.objectives import Classification, Regression
from plantpheno.training.loop import (
    EarlyExit,
    Interrupted,
    Networks,
    NonFiniteLossError,
    Optimization,
    TrainingLoop,
    TrainState,
)
from plantpheno.training.unknowns import cached_pooled, evaluate_unknowns, fit_run_detector


@dataclass(frozen=True)
class RunResult:
    """Where a finished run lives and its final evaluation metrics."""

    run_dir: Path
    metrics: dict[str, Any]
    state: TrainState


@dataclass
class _Setup:
    """What every phase, the evaluation and the trackers share: built the same way for a new run, a resumed
    run and an evaluation."""

    config: Config
    prepared: PreparedData
    task: Classification | Regression
    model: nn.Module  # the whole network
    loaders: Loaders
    device: torch.device
    meta: ModelMeta  # what checkpoints record to rebuild the model and its preprocessing
    dist: DistContext
    reporter: Reporter
    phases: tuple[Phase, ...]
    features: FrozenFeatures | None  # with training.feature_cache: the phases' cached inputs


def _setup(config: Config, *, manifest: Path | None, load_pretrained: bool, reporter: Reporter,
           dist: DistContext = DistContext(), splits: Sequence[str] = SPLITS,
           feature_store: FeatureStore | None = None) -> _Setup:
    """Data, task, model and loaders; ``feature_store`` shares frozen backbone passes with other runs."""
    main = dist.is_main  # only rank 0 shows progress
    prepared = prepare_data(config, manifest_override=manifest, reporter=reporter if main else None)
    _report_links(prepared, config, reporter)
    if prepared.class_names is not None:
        task: Classification | Regression = Classification(prepared.class_names)
    else:
        task = Regression(*prepared.target_stats(), counts=prepared.is_count_trait())
    starting = load_pretrained and config.model.init_from is not None  # the parent's weights replace pretrained ones
    model_cfg = (config.model if load_pretrained and not starting
                 else config.model.model_copy(update={"pretrained": False}))
    model = build_model(model_cfg, num_outputs=task.num_outputs, regression=isinstance(task, Regression),
                        bands=band_names(config.data.bands) if config.data.bands else None)
    if main and hasattr(model, "plantpheno_input_adapter"):
        reporter.info(model.plantpheno_input_adapter)
    parent = (parent_model.start_from_parent(model, config, task=task.name, class_names=prepared.class_names)
              if starting else None)
    check_phases(model, config)
    mean, std = normalization(model, config)
    device = resolve_device(config.device)
    if wants_channels_last(config.training.channels_last, device, model):
        to_channels_last(model)  # before any pass: caches, training and evaluation all run in this format
    if prepared.band_norm is not None:  # data.bands: float N-band images, their own loaders
        loaders = build_band_loaders(prepared, config, norm=prepared.band_norm, pin_memory=device.type == "cuda",
                                     rank=dist.rank, world=dist.world_size, splits=splits)
    else:
        loaders = build_loaders(prepared, config, mean=mean, std=std, pin_memory=device.type == "cuda",
                                rank=dist.rank, world=dist.world_size, splits=splits, device_type=device.type,
                                reporter=reporter if main else None)
    meta = build_model_meta(task=task.to_meta(), backbone=config.model.backbone, image_size=config.data.image_size,
                            resize=config.data.resize, mean=mean, std=std, dataset_fingerprint=prepared.fingerprint,
                            plantpheno_version=__version__,
                            bands=band_meta(config.data.bands, prepared.band_norm,
                                            getattr(model, "plantpheno_input_adapter", None)),
                            parent_model=parent)
    model = model.to(device)
    features = (FrozenFeatures(model, prepared, loaders, config, mean=mean, std=std, device=device,
                               reporter=reporter if main else None, store=feature_store)
                if config.training.feature_cache else None)
    return _Setup(config, prepared, task, model, loaders, device, meta, dist, reporter, plan_phases(config), features)


def train(config: Config, *, callbacks: Sequence[object] = (), handle_signals: bool = True,
          reporter: Reporter | None = None, feature_store: FeatureStore | None = None) -> RunResult:
    """Train a new run from ``config``, evaluate it, and return where it is.

    ``feature_store`` (with ``training.feature_cache``) keeps the frozen backbone's passes for later runs of this
    process and serves the ones an earlier run made (budget mode's candidates share them).

    Under torchrun every rank calls this; rank 0 creates the run directory (and holds its lock) and tells the
    others.
    """
    reporter = default_reporter(reporter)
    dist, config = _join_job(config)
    setup = None
    with contextlib.ExitStack() as held:
        try:
            dist.on_main(lambda: check_output_dir(config.output_dir))  # before the image check (minutes)
            seed_everything(config.seed, deterministic=config.deterministic)
            set_threads(config.training.threads, processes_per_machine=distributed.local_world_size())
            # Data and model first: a bad image or backbone fails before any run folder exists.
            setup = _setup(config, manifest=None, load_pretrained=True, dist=dist, reporter=reporter,
                           feature_store=feature_store)
            dist.on_main(lambda: source_eval.check_sources(config, setup.prepared.class_names))
            # an error-level finding stops here too, on every rank (rank 0 checks, the others hear its verdict)
            checked = dist.on_main(lambda: _check_data(setup))
            run = dist.broadcast(_new_run_dir(setup, held, checked) if dist.is_main else None)
            return _fit_and_evaluate(setup, run, checkpoint=None, callbacks=callbacks, handle_signals=handle_signals)
        finally:
            _release(setup, dist)


def resume(run_dir: Path, *, callbacks: Sequence[object] = (), handle_signals: bool = True,
           reporter: Reporter | None = None) -> RunResult:
    """Continue an interrupted run from ``checkpoints/last.pt``, exactly where it stopped (same world size),
    on any number of processes. A run that stopped before its first checkpoint starts again from epoch 1 (and
    says so); temporary files that killed writes left in the run directory are removed."""
    reporter = default_reporter(reporter)
    run = RunDir.of(run_dir)
    dist, config = _join_job(run.read_config())
    setup = None
    with contextlib.ExitStack() as held:
        try:
            if dist.is_main:
                held.enter_context(run.lock("resuming"))
                removed = remove_stale_temp_files_under(run.path)
                if removed:
                    reporter.info(f"removed {len(removed)} temporary file(s) that interrupted writes left in "
                                  f"{run.path}")
            checkpoint = _resume_checkpoint(run, reporter if dist.is_main else None)
            seed_everything(config.seed, deterministic=config.deterministic)
            set_threads(config.training.threads, processes_per_machine=distributed.local_world_size())
            recorded = run.split_manifest.is_file() and run.dataset_info.is_file()
            setup = _setup(config, manifest=run.split_manifest if recorded else None,
                           load_pretrained=checkpoint is None, dist=dist, reporter=reporter)
            saved = ModelMeta.from_checkpoint(checkpoint, source=run.path) if checkpoint is not None else None
            if saved is not None and saved.parent_model is not None:  # keep the lineage on resume
                setup.meta = setup.meta.model_copy(update={"parent_model": saved.parent_model})
            if recorded:
                _check_same_data(run, setup.prepared)
            elif dist.is_main:  # it stopped while writing its data files: write them now
                write_data_files(setup.prepared, run)
            if dist.is_main and not run.environment.is_file():  # it stopped before writing environment.json
                run.write_environment(str(setup.device))
            return _fit_and_evaluate(setup, run, checkpoint=checkpoint, callbacks=callbacks,
                                     handle_signals=handle_signals)
        finally:
            _release(setup, dist)


def _resume_checkpoint(run: RunDir, reporter: Reporter | None) -> dict[str, Any] | None:
    """``last.pt``, or None (with a plain message) for a run that stopped before its first epoch ended."""
    if run.last_checkpoint.is_file():
        return load_checkpoint(run.last_checkpoint)
    if reporter is not None:
        reporter.warning(f"{run.path} has no checkpoint ({run.last_checkpoint.name}): it stopped before its first "
                         f"epoch ended, so training starts again from epoch 1")
    return None


def evaluate_run(run_dir: Path, *, split: str = "test", device: str | None = None,
                 reporter: Reporter | None = None) -> dict[str, Any]:
    """Evaluate a run's best checkpoint (or its last, if no best exists) on one of its splits."""
    run = RunDir.of(run_dir)
    config = run.read_config()
    if device is not None:
        config = validate_config({**config_to_dict(config), "device": device}, source="--device")
    with run.lock("evaluating"):
        checkpoint = _checkpoint_to_use(run, default_reporter(reporter))
        set_threads(config.training.threads)
        # the validation split too: the softmax temperature is fitted on it
        setup = _setup(config, manifest=run.split_manifest, load_pretrained=False,
                       splits=tuple(dict.fromkeys((split, "val"))), reporter=default_reporter(reporter))
        try:
            _check_same_data(run, setup.prepared)
            setup.model.load_state_dict(checkpoint["model"])
            return _evaluate(setup, run, split=split, best_epoch=checkpoint["state"]["epoch"])
        finally:
            close_loaders(setup.loaders)


def _checkpoint_to_use(run: RunDir, reporter: Reporter) -> dict[str, Any]:
    """The run's best checkpoint, checked; its last one, with a warning, when there is no best.pt: the user asked
    for "the trained model", and last.pt is that model at a later epoch, so refusing would leave a run whose
    best.pt was deleted or never written (no epoch improved) without any evaluation; a silent fallback would
    present another epoch's weights as the best ones."""
    path = run.checkpoint_to_use()
    if path is None:
        raise RunDirError(f"{run.path} has no checkpoint yet ({run.best_checkpoint} and {run.last_checkpoint} "
                          f"are missing)")
    checkpoint = load_checkpoint(path)
    if path != run.best_checkpoint:
        reporter.warning(f"{run.best_checkpoint} is missing: using {path.name} instead (epoch "
                         f"{checkpoint['state']['epoch']}, the last one saved, which may not be the best)")
    return checkpoint


def report_run(run_dir: Path, *, split: str | None = None, device: str = "cpu") -> Path:
    """Rebuild the report of ``split`` (``RUN_DIR/report.html`` for test, ``report_<split>.html`` otherwise) from
    the run's files and its best checkpoint (Grad-CAM needs the model);
    ``split`` defaults to the config's ``evaluation.split``."""
    from plantpheno.evaluation.html_report import write_run_report

    run = RunDir.of(run_dir)
    config = run.read_config()
    split = split or config.evaluation.split
    if config.data.bands is not None:
        raise ConfigError(f"{run.path}: a run of data.bands ({', '.join(band_names(config.data.bands))}) has no HTML "
                          f"report yet (its figures and Grad-CAM draw RGB images); its metrics are in "
                          f"{run.eval(split).metrics}")
    checkpoint = _checkpoint_to_use(run, default_reporter(None))
    meta = ModelMeta.from_checkpoint(checkpoint, source=run.path)
    model = build_model(config.model.model_copy(update={"pretrained": False}), num_outputs=meta.num_outputs,
                        bands=band_names(config.data.bands) if config.data.bands else None)
    model.load_state_dict(checkpoint["model"])
    return write_run_report(run, split, model=model.to(resolve_device(device)).eval(), meta=meta)


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------


def _join_job(config: Config) -> tuple[DistContext, Config]:
    """Join the torchrun job, if this process is part of one; each rank gets its own device."""
    dist, device = distributed.init(distributed.from_environment(), config.device,
                                    timeout_s=config.distributed.timeout_s)
    if dist.enabled and device != config.device:
        config = validate_config({**config_to_dict(config), "device": device}, source="torchrun")
    if config.distributed.sync_batchnorm and dist.enabled and not device.startswith("cuda"):
        raise ConfigError("distributed.sync_batchnorm needs CUDA GPUs (NCCL); it does not work on CPU/gloo — "
                          "set it to false for CPU runs")
    return dist, config


def _release(setup: _Setup | None, dist: DistContext) -> None:
    """End of a run, however it ended: stop the loader workers and leave the process group."""
    try:
        if setup is not None:
            close_loaders(setup.loaders)
    finally:
        distributed.shutdown(dist)


def _check_data(setup: _Setup) -> DataCheckReport | None:
    """The data checks (``data.checks``), on rank 0: an error-level finding raises ``DataCheckError`` before any run
    folder exists, unless ``data.checks.on_error: warn``."""
    if not (setup.dist.is_main and setup.config.data.checks.enabled):
        return None
    from plantpheno.training.data_checks import enforce, run_data_checks

    if setup.config.data.bands is not None:
        setup.reporter.info("data checks on band images: the pixel measures behind the quality, shortcut and "
                            "near-duplicate checks are taken of RGB images only, so those checks find nothing here "
                            "(per-band checks: not yet); exact duplicates and labels are checked")
    report = run_data_checks(setup.prepared, setup.config, reporter=setup.reporter)
    return enforce(report, setup.config, reporter=setup.reporter)


def _new_run_dir(setup: _Setup, held: contextlib.ExitStack, checked: DataCheckReport | None = None) -> RunDir:
    run, lock = create_run_dir(setup.config)
    held.callback(lock.release)
    try:
        run.write_config(setup.config)
        write_data_files(setup.prepared, run)
        if checked is not None:
            checked.write(run.data_check)
        run.write_environment(str(setup.device))
    except BaseException as exc:
        recorded = _write_end_status(run, "failed", reason=str(exc) or type(exc).__name__)
        if isinstance(exc, StorageError):
            raise StorageError(f"{exc}. {_what_is_safe(run, recorded)}") from None
        raise
    return run


def _report_links(prepared: PreparedData, config: Config, reporter: Reporter) -> None:
    links = prepared.links_outside_root
    if not links:
        return
    policy = config.data.links_outside_root
    shown = ", ".join(f"{link} -> {target}" for link, target in links[:5]) + (" ..." if len(links) > 5 else "")
    used = "used" if policy == "follow" else "skipped"
    reporter.warning(f"data.root {config.data.root}: {len(links)} symbolic link(s) lead outside it and are {used} "
                     f"(data.links_outside_root={policy}; listed in dataset.json): {shown}")


def _check_same_data(run: RunDir, prepared: PreparedData) -> None:
    recorded = run.read_dataset_info()["fingerprint"]
    if recorded != prepared.fingerprint:
        raise DataError(
            f"the images of {run.path} changed since the run started (dataset fingerprint "
            f"{prepared.fingerprint[:12]} != recorded {recorded[:12]}); start a new run instead of resuming"
        )


def _fit_and_evaluate(setup: _Setup, run: RunDir, *, checkpoint: dict[str, Any] | None,
                      callbacks: Sequence[object], handle_signals: bool) -> RunResult:
    """Train every phase (from the checkpoint's position, if any), then, on rank 0, evaluate, record and
    register the run."""
    dist, config, main = setup.dist, setup.config, setup.dist.is_main
    trackers = _open_tracking(setup, run, resuming=checkpoint is not None) if main else TrackerSet([])
    system = SystemMonitor(trackers, interval=config.tracking.system_metrics_interval) if main else None
    tracking = TrackerCallback(trackers, system=system)
    replicas = ReplicaCheck(dist) if dist.enabled else None
    try:
        state = _train_phases(setup, run, checkpoint=checkpoint, tracking=tracking, callbacks=callbacks,
                              replicas=replicas, handle_signals=handle_signals)
    except BaseException as exc:
        recorded = _record_end(run, trackers, exc, main=main)
        if isinstance(exc, NonFiniteLossError):
            kept = (f"the last good checkpoint is {run.last_checkpoint} (epoch {exc.epoch - 1})"
                    if run.last_checkpoint.is_file() else "no epoch had completed")
            raise TrainingError(f"{exc}; training stopped and {kept}. Lower training.learning_rate "
                                f"or set training.grad_clip_norm.") from None
        if isinstance(exc, StorageError) and main:
            raise StorageError(f"{exc}. {_what_is_safe(run, recorded)}") from None
        raise
    finally:
        tracking.close()
    if not main:  # the other ranks are done: rank 0 evaluates, reports and registers
        return RunResult(run.path, {}, state)
    try:
        return _evaluate_and_record(setup, run, state, trackers, replicas)
    except BaseException as exc:
        recorded = _record_end(run, trackers, exc, main=True)
        if isinstance(exc, StorageError):
            raise StorageError(f"{exc}. {_what_is_safe(run, recorded)}") from None
        raise


def _evaluate_and_record(setup: _Setup, run: RunDir, state: TrainState, trackers: TrackerSet,
                         replicas: ReplicaCheck | None) -> RunResult:
    """Rank 0, after training: evaluate the best weights, record the run, register it if asked."""
    config = setup.config
    if setup.dist.enabled:
        run.write_status("evaluating", distributed=_job_summary(setup, replicas))
    _plot_history(run)
    split = config.evaluation.split
    metrics = _evaluate(setup, run, split=split, best_epoch=state.best_epoch, sources=True, fit_ood=True)
    name, _ = config.monitor
    run.write_status("completed", epochs=state.epoch, best_epoch=state.best_epoch, best_value=state.best_value,
                     monitor=name, evaluation={split: _headline(metrics)})
    log_run_results(trackers, run, metrics, split=split, step=state.epoch,
                    log_checkpoint=config.tracking.log_checkpoint)
    trackers.finish("completed")
    if config.registry.name:
        _register(config, run, setup.reporter)
    return RunResult(run.path, metrics, state)


def _what_is_safe(run: RunDir, recorded: bool) -> str:
    """After a failed write: what the run directory still holds, and how to go on."""
    marked = ("run.json marks the run failed" if recorded
              else "run.json could not be updated either (the run lists as crashed)")
    if run.last_checkpoint.is_file():
        kept = f"{run.last_checkpoint} holds the last completed epoch"
    elif run.best_checkpoint.is_file():
        kept = (f"{run.best_checkpoint} holds the best weights so far, but no resumable checkpoint was written "
                f"(a resume starts again from epoch 1)")
    else:
        kept = "no checkpoint was written yet (a resume starts again from epoch 1)"
    return (f"{marked}; {kept}. Free some space (or fix the permissions), then resume with: "
            f"plantpheno train --resume {run.path}")


def _open_tracking(setup: _Setup, run: RunDir, *, resuming: bool) -> TrackerSet:
    prepared = setup.prepared
    return open_run_tracking(setup.config, run, split_sizes={k: len(v) for k, v in prepared.splits.items()},
                             num_classes=len(prepared.class_names or []), fingerprint=prepared.fingerprint,
                             task=setup.task.name, resuming=resuming, reporter=setup.reporter)


def _train_phases(setup: _Setup, run: RunDir, *, checkpoint: dict[str, Any] | None, tracking: TrackerCallback,
                  callbacks: Sequence[object], replicas: ReplicaCheck | None, handle_signals: bool) -> TrainState:
    """Run the planned phases in order; a resumed run continues in the phase its checkpoint was written in.

    Callbacks run in this order: tracking (first, so a pruned trial's last epoch is still tracked), the
    built-in ones (:func:`_builtin`), then the caller's."""
    world = setup.dist.world_size
    state = _resumed_state(checkpoint["state"], world) if checkpoint is not None else TrainState(world_size=world)
    names = [p.name for p in setup.phases]
    for phase in setup.phases[names.index(state.phase):]:
        if phase.name != state.phase:  # a new phase: its own count of epochs without improvement
            state.phase, state.phase_start, state.bad_epochs = phase.name, state.epoch, 0
        trainer = _build_trainer(setup, run, phase, state, checkpoint,
                                 [tracking, *_builtin(setup, run, replicas, phase), *callbacks])
        if phase.name == "fine_tune" and checkpoint is None and setup.dist.is_main:
            ft = setup.config.training.fine_tune
            warmup = f" after {ft.warmup_epochs:g} warmup epoch(s)" if ft.warmup_epochs else ""
            setup.reporter.info(f"fine-tune phase: the last {ft.blocks} backbone block(s) unfrozen for {ft.epochs} "
                                f"epoch(s) at learning rate {ft.learning_rate:g}{warmup}, from the best head (epoch "
                                f"{state.best_epoch}); the training loss may jump in its first epoch while the "
                                f"unfrozen blocks adapt, and the best checkpoint stays the best of both phases")
        state = _fit(trainer, run, handle_signals=handle_signals)
        # the next phase starts from the best weights, which rank 0 restored; a new DDP wrapper broadcasts
        # rank 0's parameters and buffers to the other ranks when it is built
        checkpoint = None
    return state


def _builtin(setup: _Setup, run: RunDir, replicas: ReplicaCheck | None, phase: Phase) -> list[object]:
    """The callbacks of every phase: replica check (distributed), early stopping, and on rank 0 the files and
    the console."""
    patience = setup.config.training.early_stopping
    later = [p.name for p in setup.phases[[p.name for p in setup.phases].index(phase.name) + 1:]]
    what = {"train": "the head phase" if later else "training", "fine_tune": "the fine-tune phase"}[phase.name]
    then = "; the fine-tune phase starts from it" if "fine_tune" in later else ""
    builtin: list[object] = [EarlyStopping(patience=patience.patience, min_delta=patience.min_delta, phase=what,
                                           then=then, reporter=setup.reporter if setup.dist.is_main else None)]
    if replicas is not None:
        builtin.insert(0, replicas)
    if setup.dist.is_main:  # only rank 0 writes files and prints
        builtin += [Checkpointer(run, meta=setup.meta), MetricsLog(run.metrics_log, reporter=setup.reporter),
                    Console(setup.reporter, progress_bar=setup.config.training.progress_bar)]
    return builtin


def _build_trainer(setup: _Setup, run: RunDir, phase: Phase, state: TrainState,
                   checkpoint: dict[str, Any] | None, callbacks: Sequence[object]) -> TrainingLoop:
    """The trainer of one phase, continuing ``state`` (restored from ``checkpoint`` when resuming)."""
    config, model, dist = setup.config, setup.model, setup.dist
    enter(phase, model)
    settings = phase.settings
    loss_fn = build_loss(config, train_targets=setup.prepared.targets("train"), num_classes=setup.task.num_outputs)
    optimizer = build_optimizer(model, settings, world_size=dist.world_size)
    train_loader = setup.loaders["train"]
    train_loader.sampler.set_epoch(0)  # a whole epoch's length: a resumed epoch left the sampler part-way
    scheduler = build_scheduler(optimizer, settings, steps_per_epoch=len(train_loader))
    dtype = amp_dtype(config, setup.device)
    scaler = torch.amp.GradScaler(setup.device.type, enabled=dtype == torch.float16)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        restore_rng(checkpoint["rng"])  # last: building the model above consumed random numbers
    # the trainer sees the part after the feature cache; checkpoints hold the whole model
    loaders, net = setup.features.inputs(phase) if setup.features is not None else (setup.loaders, model)
    # inputs follow the model's format; a head on pooled (2-D) features has none
    channels_last = input_format(net) == torch.channels_last and not isinstance(net, CachedHead)
    optimization = Optimization(optimizer, scheduler, steps_per_batch(settings), scaler, dtype,
                                config.training.grad_clip_norm)
    return TrainingLoop(nets=Networks(trained=net, stepped=_stepped_module(net, setup), whole=model), task=setup.task,
                        loss_fn=loss_fn, optimization=optimization, loaders=loaders, device=setup.device,
                        epochs=state.phase_start + phase.epochs, monitor=config.monitor, callbacks=callbacks,
                        state=state, dist=dist, channels_last=channels_last,
                        check_every=check_every(config.training.check_every, setup.device),
                        release_memory=config.training.release_memory)


def _stepped_module(net: nn.Module, setup: _Setup) -> nn.Module:
    """What the optimizer steps through: the network, in DDP when distributed, compiled if asked."""
    dist, config = setup.dist, setup.config
    module: nn.Module = net
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        if config.distributed.sync_batchnorm:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        on_gpu = setup.device.type == "cuda"
        module = DistributedDataParallel(module, device_ids=[setup.device.index] if on_gpu else None)
    if config.training.compile:
        module = torch.compile(module)
    return module


def _resumed_state(saved: dict[str, Any], world_size: int) -> TrainState:
    """The saved loop state; a mid-epoch position is re-expressed for a different number of ranks."""
    state = TrainState.from_dict(saved)
    if state.world_size != world_size:
        state.batch = (state.batch * state.world_size) // world_size
        state.world_size = world_size
    return state


def _fit(trainer: TrainingLoop, run: RunDir, *, handle_signals: bool) -> TrainState:
    if trainer.dist.is_main:
        run.write_status("running")
    use_signals = handle_signals and threading.current_thread() is threading.main_thread()
    with _stop_on_signals(trainer) if use_signals else contextlib.nullcontext():
        return trainer.fit()


def _record_end(run: RunDir, trackers: TrackerSet, exc: BaseException, *, main: bool) -> bool:
    """How a run that did not finish ended, in ``run.json`` (written by rank 0) and in the trackers; returns
    whether ``run.json`` could be written."""
    if isinstance(exc, Interrupted):
        exc.run_dir = run.path
        status, tracked, fields = "interrupted", "interrupted", {"epoch": exc.state.epoch, "batch": exc.state.batch,
                                                                 "reason": exc.reason}
    elif isinstance(exc, EarlyExit):
        status, tracked, fields = exc.status, "interrupted", {"reason": str(exc)}
    elif isinstance(exc, KeyboardInterrupt):
        status, tracked, fields = "interrupted", "interrupted", {"reason": "KeyboardInterrupt"}
    else:
        status, tracked, fields = "failed", "failed", {"reason": str(exc) or type(exc).__name__}
    recorded = _write_end_status(run, status, **fields) if main else False
    trackers.finish(tracked)
    return recorded


def _write_end_status(run: RunDir, status: str, **fields: Any) -> bool:
    """``run.json`` at the end of a run, if it can still be written (a full disk must not hide the error that
    ended the run)."""
    try:
        run.write_status(status, **fields)
    except (OSError, StorageError, ValueError):
        return False
    return True


def _register(config: Config, run: RunDir, reporter: Reporter) -> None:
    """Auto-registration in the registry every command uses (``registry.store.locate_registry``); a failure here
    does not undo a completed run, so it warns with the manual command."""
    from plantpheno.registry.store import ModelRegistry, locate_registry

    reg = config.registry
    location = locate_registry(config=config)
    try:
        info = ModelRegistry(location.uri).register(run.path, name=reg.name, alias=reg.alias, force=reg.force)
    except Exception as exc:  # noqa: BLE001 - the trained run stays valid whatever the registry does
        reporter.warning(f"registering {reg.name} failed ({type(exc).__name__}: {exc}); retry with: "
                         f"plantpheno models register {run.path} --name {reg.name} --registry {location.uri}")
        return
    run.write_status("completed", registered={"name": info.name, "version": info.version, "uri": location.uri})
    reporter.info(f"registered {info.name} version {info.version} in {location.uri} ({location.source})")


def _job_summary(setup: _Setup, replicas: ReplicaCheck | None) -> dict[str, Any]:
    """Effective batch size and learning rate of a distributed run, and whether replicas stayed identical."""
    from plantpheno.training.optim import effective_lr

    dist, config = setup.dist, setup.config
    return {"world_size": dist.world_size, "backend": dist.backend,
            "per_rank_batch_size": config.data.batch_size,
            "global_batch_size": config.data.batch_size * dist.world_size,
            "learning_rate": effective_lr(config, dist.world_size), "scale_lr": config.distributed.scale_lr,
            "replicas_identical": replicas.identical if replicas else None}


def _plot_history(run: RunDir) -> None:
    history = [{k: v for k, v in record.items() if k == "epoch" or k.startswith(("train/", "val/"))}
               for record in read_epoch_log(run.metrics_log).records]  # a torn line was reported at resume
    plot_training_curves(history, run.training_curves)


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return Evaluation.from_dict(metrics).headline_summary()


def _evaluate(setup: _Setup, run: RunDir, *, split: str, best_epoch: int | None,
              sources: bool = False, fit_ood: bool = False) -> dict[str, Any]:
    # with the feature cache, the validation predictions come from the cached inputs (the frozen part is not
    # run over the validation images again), in the order and shard of the image loaders
    validation = setup.features.validation_source() if setup.features is not None else None
    metrics = evaluate_split(setup.model, setup.loaders, split=split, task=setup.task, prepared=setup.prepared,
                             config=setup.config, device=setup.device, run=run, reporter=setup.reporter,
                             checkpoint_epoch=best_epoch, validation=validation)
    if sources and setup.config.evaluation.sources:  # before the report, which shows them
        source_eval.evaluate_sources(setup.model, run, config=setup.config, meta=setup.meta, device=setup.device,
                                     checkpoint_epoch=best_epoch, reporter=setup.reporter)
    # after evaluate_split: the detector's MSP/energy scores use the temperature it fitted
    unknowns = dict(prepared=setup.prepared, loaders=setup.loaders, config=setup.config, device=setup.device,
                    run=run, mean=list(setup.meta.mean), std=list(setup.meta.std), reporter=setup.reporter)
    if fit_ood:  # only train fits it, on train/val; evaluate applies what train stored
        cached = setup.features.validation_source() if setup.features is not None else None
        fit_run_detector(setup.model, cached=cached_pooled(cached, setup.model, setup.device), **unknowns)
    evaluate_unknowns(setup.model, split=split, **unknowns)
    if setup.config.evaluation.report and setup.config.data.bands is not None:
        setup.reporter.warning("no HTML report for data.bands yet (its figures and Grad-CAM draw RGB images); the "
                               "metrics and predictions files are written")
    elif setup.config.evaluation.report:
        write_report_or_warn(run, split, model=setup.model, meta=setup.meta, reporter=setup.reporter)
    return metrics


@contextlib.contextmanager
def _stop_on_signals(trainer: TrainingLoop) -> Iterator[None]:
    """SIGINT/SIGTERM: finish the current batch, save ``last``, stop. A second SIGINT stops at once."""

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_requested = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
