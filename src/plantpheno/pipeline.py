"""The one path from a config to a trained, evaluated run: ``train()``, ``resume()`` and ``evaluate_run()``.

    config -> data, task, model, loaders (_setup)  -> run directory  -> tracking
           -> each training phase (TrainingLoop.fit)    -> evaluation     -> registry

Messages go to the ``reporter`` the caller gives (the command line prints them); without one they go to
Python's logging.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plantpheno.distributed as distributed
import plantpheno.parent_model as parent_model
import plantpheno.source_eval as source_eval
from plantpheno.band_config import band_names
from plantpheno.config import Config, config_to_dict, validate_config
from plantpheno.data.datasets import close_loaders
from plantpheno.data.prepared import check_same_data, prepare_data, report_links_outside_root, write_data_files
from plantpheno.data.sources import SPLITS
from plantpheno.device import resolve_device, seed_everything, set_threads
from plantpheno.distributed import DistContext
from plantpheno.errors import ConfigError, StorageError
from plantpheno.evaluation.band_importance import write_band_importance
from plantpheno.evaluation.html_report import write_report_or_warn
from plantpheno.evaluation.plots import plot_run_history
from plantpheno.evaluation.run_eval import evaluate_split
from plantpheno.files.atomic import remove_stale_temp_files_under
from plantpheno.models import build_model, normalization, to_channels_last, wants_channels_last
from plantpheno.records.evaluation import Evaluation
from plantpheno.records.model_meta import ModelMeta
from plantpheno.reporting import Reporter, default_reporter
from plantpheno.run.folder import RunDir, check_output_dir
from plantpheno.tracking.lifecycle import log_run_results
from plantpheno.tracking.session import TrackerSet
from plantpheno.training.assembly import train_phases
from plantpheno.training.callbacks import ReplicaCheck
from plantpheno.training.checkpoint import checkpoint_to_use, resume_checkpoint
from plantpheno.training.doctor_features import check_before_training
from plantpheno.training.feature_store import FeatureStore
from plantpheno.training.job import (TrainingJob, job_loaders, job_meta, job_network, job_summary, new_run_dir,
                                    open_job_tracking)
from plantpheno.training.loop import NonFiniteLossError, TrainState
from plantpheno.training.objectives import Classification, Regression
from plantpheno.training.outcome import non_finite_error, record_end, what_is_safe
from plantpheno.training.phases import check_phases, plan_phases
from plantpheno.training.unknowns import check_can_fit, detect_unknowns, kept_split


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Where a finished run lives and its final evaluation metrics."""

    run_dir: Path
    metrics: dict[str, Any]
    state: TrainState


def _setup(config: Config, *, manifest: Path | None, load_pretrained: bool, reporter: Reporter,
           dist: DistContext = DistContext(), splits: Sequence[str] = SPLITS,
           feature_store: FeatureStore | None = None) -> TrainingJob:
    """Data, task, model and loaders: the job the phases, the evaluation and the trackers share, built alike for a
    new, resumed or evaluated run; ``feature_store`` shares frozen backbone passes with other runs."""
    main = dist.is_main  # only rank 0 shows progress
    prepared = prepare_data(config, manifest_override=manifest, reporter=reporter if main else None)
    report_links_outside_root(prepared, config.data.root, reporter)
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
    check_phases(model, config.training.fine_tune)
    mean, std = normalization(model, mean=config.data.mean, std=config.data.std)
    device = resolve_device(config.device)
    if wants_channels_last(config.training.channels_last, device, model):
        to_channels_last(model)  # before any pass: caches, training and evaluation all run in this format
    loaders = job_loaders(prepared, config.data, seed=config.seed, output_dir=config.output_dir, mean=mean, std=std,
                          device=device, dist=dist, splits=splits, reporter=reporter if main else None)
    meta = job_meta(prepared, config.data, backbone=config.model.backbone, task=task, model=model, mean=mean,
                    std=std, parent=parent)
    model, features = job_network(model, config, prepared, loaders, mean=mean, std=std, device=device,
                                  new_run=load_pretrained, reporter=reporter if main else None, store=feature_store)
    return TrainingJob(config, prepared, task, model, loaders, device, meta, dist, reporter,
                       plan_phases(config.training), features)


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
    job = None
    with contextlib.ExitStack() as held:
        try:
            dist.on_main(lambda: check_output_dir(config.output_dir))  # before the image check (minutes)
            seed_everything(config.seed, deterministic=config.deterministic)
            set_threads(config.training.threads, processes_per_machine=distributed.local_world_size())
            # Data and model first: a bad image or backbone fails before any run folder exists.
            job = _setup(config, manifest=None, load_pretrained=True, dist=dist, reporter=reporter,
                         feature_store=feature_store)
            dist.on_main(lambda: source_eval.check_sources(config, job.prepared.class_names))
            # an error-level finding stops here too, on every rank (rank 0 checks, the others hear its verdict)
            checked = dist.on_main(lambda: check_before_training(job))
            run = dist.broadcast(new_run_dir(job, held, checked) if dist.is_main else None)
            return _fit_and_evaluate(job, run, checkpoint=None, callbacks=callbacks, handle_signals=handle_signals)
        finally:
            _release(job, dist)


def resume(run_dir: Path, *, callbacks: Sequence[object] = (), handle_signals: bool = True,
           reporter: Reporter | None = None) -> RunResult:
    """Continue an interrupted run from ``checkpoints/last.pt``, exactly where it stopped (same world size),
    on any number of processes. A run that stopped before its first checkpoint starts again from epoch 1 (and
    says so); temporary files that killed writes left in the run directory are removed."""
    reporter = default_reporter(reporter)
    run = RunDir.of(run_dir)
    dist, config = _join_job(run.read_config())
    job = None
    with contextlib.ExitStack() as held:
        try:
            if dist.is_main:
                held.enter_context(run.lock("resuming"))
                removed = remove_stale_temp_files_under(run.path)
                if removed:
                    reporter.info(f"removed {len(removed)} temporary file(s) that interrupted writes left in "
                                  f"{run.path}")
            checkpoint = resume_checkpoint(run, reporter if dist.is_main else None)
            seed_everything(config.seed, deterministic=config.deterministic)
            set_threads(config.training.threads, processes_per_machine=distributed.local_world_size())
            recorded = run.split_manifest.is_file() and run.dataset_info.is_file()
            job = _setup(config, manifest=run.split_manifest if recorded else None,
                         load_pretrained=checkpoint is None, dist=dist, reporter=reporter)
            saved = ModelMeta.from_checkpoint(checkpoint, source=run.path) if checkpoint is not None else None
            if saved is not None and saved.parent_model is not None:  # keep the lineage on resume
                job = dataclasses.replace(job, meta=job.meta.model_copy(update={"parent_model": saved.parent_model}))
            if recorded:
                check_same_data(run, job.prepared)
            elif dist.is_main:  # it stopped while writing its data files: write them now
                write_data_files(job.prepared, run)
            if dist.is_main and not run.environment.is_file():  # it stopped before writing environment.json
                run.write_environment(str(job.device))
            return _fit_and_evaluate(job, run, checkpoint=checkpoint, callbacks=callbacks,
                                     handle_signals=handle_signals)
        finally:
            _release(job, dist)


def evaluate_run(run_dir: Path, *, split: str = "test", device: str | None = None,
                 reporter: Reporter | None = None, fit_unknowns: bool = False) -> dict[str, Any]:
    """Evaluate a run's best checkpoint (or its last) on a split; ``fit_unknowns``: fit its OOD detector first."""
    run = RunDir.of(run_dir)
    config = check_can_fit(run.read_config(), run, fit=fit_unknowns)
    if device is not None:
        config = validate_config({**config_to_dict(config), "device": device}, source="--device")
    with run.lock("evaluating"):
        checkpoint = checkpoint_to_use(run, default_reporter(reporter))
        set_threads(config.training.threads)
        # the validation split too: the softmax temperature is fitted on it (and train: the detector's features)
        job = _setup(config, manifest=run.split_manifest, load_pretrained=False, reporter=default_reporter(reporter),
                     splits=tuple(dict.fromkeys((split, "val", *(("train",) if fit_unknowns else ())))))
        try:
            check_same_data(run, job.prepared)
            job.model.load_state_dict(checkpoint["model"])
            return _evaluate(job, run, split=split, best_epoch=checkpoint["state"]["epoch"], fit_ood=fit_unknowns)
        finally:
            close_loaders(job.loaders)


def report_run(run_dir: Path, *, split: str | None = None, device: str = "cpu") -> Path:
    """Rebuild the report of ``split`` (``RUN_DIR/report.html`` for test, ``report_<split>.html`` otherwise) from
    the run's files and its best checkpoint (Grad-CAM needs the model);
    ``split`` defaults to the config's ``evaluation.split``."""
    from plantpheno.evaluation.html_report import write_run_report

    run = RunDir.of(run_dir)
    config = run.read_config()
    split = split or config.evaluation.split
    checkpoint = checkpoint_to_use(run, default_reporter(None))
    meta = ModelMeta.from_checkpoint(checkpoint, source=run.path)
    model = build_model(config.model.model_copy(update={"pretrained": False}), num_outputs=meta.num_outputs,
                        bands=band_names(config.data.bands) if config.data.bands else None)
    model.load_state_dict(checkpoint["model"])
    return write_run_report(run, split, model=model.to(resolve_device(device)).eval(), meta=meta)


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


def _release(job: TrainingJob | None, dist: DistContext) -> None:
    """End of a run, however it ended: stop the loader workers and leave the process group."""
    try:
        if job is not None:
            close_loaders(job.loaders)
    finally:
        distributed.shutdown(dist)


def _fit_and_evaluate(job: TrainingJob, run: RunDir, *, checkpoint: dict[str, Any] | None,
                      callbacks: Sequence[object], handle_signals: bool) -> RunResult:
    """Train every phase (from the checkpoint's position, if any), then, on rank 0, evaluate, record and
    register the run."""
    dist, main = job.dist, job.dist.is_main
    trackers, tracking = open_job_tracking(job, run, resuming=checkpoint is not None)
    replicas = ReplicaCheck(dist) if dist.enabled else None
    try:
        state = train_phases(job, run, checkpoint=checkpoint, tracking=tracking, callbacks=callbacks,
                             replicas=replicas, handle_signals=handle_signals)
    except BaseException as exc:
        recorded = record_end(run, trackers, exc, main=main)
        if isinstance(exc, NonFiniteLossError):
            raise non_finite_error(exc, run) from None
        if isinstance(exc, StorageError) and main:
            raise StorageError(f"{exc}. {what_is_safe(run, recorded)}") from None
        raise
    finally:
        tracking.close()
    if not main:  # the other ranks are done: rank 0 evaluates, reports and registers
        return RunResult(run.path, {}, state)
    try:
        return _evaluate_and_record(job, run, state, trackers, replicas)
    except BaseException as exc:
        recorded = record_end(run, trackers, exc, main=True)
        if isinstance(exc, StorageError):
            raise StorageError(f"{exc}. {what_is_safe(run, recorded)}") from None
        raise


def _evaluate_and_record(job: TrainingJob, run: RunDir, state: TrainState, trackers: TrackerSet,
                         replicas: ReplicaCheck | None) -> RunResult:
    """Rank 0, after training: evaluate the best weights, record the run, register it if asked."""
    config = job.config
    if job.dist.enabled:
        run.write_status("evaluating", distributed=job_summary(job, replicas))
    plot_run_history(run)
    split = config.evaluation.split
    metrics = _evaluate(job, run, split=split, best_epoch=state.best_epoch, sources=True, fit_ood=True)
    name, _ = config.monitor
    run.write_status("completed", epochs=state.epoch, best_epoch=state.best_epoch, best_value=state.best_value,
                     monitor=name, evaluation={split: Evaluation.from_dict(metrics).headline_summary()})
    log_run_results(trackers, run, metrics, split=split, step=state.epoch,
                    log_checkpoint=config.tracking.log_checkpoint)
    trackers.finish("completed")
    if config.registry.name:
        from plantpheno.registry.auto_register import register_trained_run

        register_trained_run(config.registry, run, job.reporter)
    return RunResult(run.path, metrics, state)


def _evaluate(job: TrainingJob, run: RunDir, *, split: str, best_epoch: int | None,
              sources: bool = False, fit_ood: bool = False) -> dict[str, Any]:
    # with the feature cache, the validation predictions come from the cached inputs (the frozen part is not
    # run over the validation images again), in the order and shard of the image loaders
    validation = job.features.validation_source() if job.features is not None else None
    passes: dict[str, Any] = {}  # each split's predictions with their pooled features: one backbone pass a split
    metrics = evaluate_split(job.model, job.loaders, split=split, task=job.task, prepared=job.prepared,
                             config=job.config, device=job.device, run=run, reporter=job.reporter,
                             checkpoint_epoch=best_epoch, validation=validation, passes=passes)
    metrics = detect_unknowns(job, run, split=split, fit=fit_ood, passes=passes) or metrics  # + unknown share
    if sources and job.config.evaluation.sources:  # before the report, which shows them; after the detector's fit
        source_eval.evaluate_sources(job.model, run, config=job.config, meta=job.meta, device=job.device,
                                     checkpoint_epoch=best_epoch, reporter=job.reporter,
                                     in_source=kept_split(passes, job.prepared, "test"))  # its features kept
    if fit_ood:  # train only: which bands the model relies on, on val (before the report, which shows it)
        write_band_importance(job.model, job.loaders, run=run, task=job.task, bands=job.config.data.bands,
                              evaluation=job.config.evaluation, seed=job.config.seed, device=job.device,
                              reporter=job.reporter, checkpoint_epoch=best_epoch)
    if job.config.evaluation.report:
        write_report_or_warn(run, split, model=job.model, meta=job.meta, reporter=job.reporter)
    return metrics
