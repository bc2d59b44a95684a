"""The model card: what a model is for, what it was trained and tested on, and how well it did."""

from __future__ import annotations

from typing import TYPE_CHECKING

from plantpheno.evaluation.card_text import INTENDED_USE, input_text, limits, output_text
from plantpheno.records.model_meta import ModelMeta

if TYPE_CHECKING:
    from plantpheno.registry.package import ModelPackage
    from plantpheno.run.folder import RunDir


def model_card(package: ModelPackage, *, run: RunDir) -> str:
    """Markdown: model, data, metrics with CI, intended use, limits, lineage."""
    m = package.meta
    dataset = run.read_dataset_info()
    counts = dataset.get("num_images", {})
    names = m.class_names or []
    what = (f"{len(names)} classes: {', '.join(names)}" if m.is_classification
            else f"a numeric trait (training mean {m.target_mean:.4g}, std {m.target_std:.4g})")
    lines = [
        f"# Model card: {m.backbone} ({m.task})", "",
        "## Model", f"- Backbone: `{m.backbone}` (timm {m.timm_version}), predicts {what}.",
        f"- Input: {input_text(m)}; normalised with mean {list(m.mean)} and std {list(m.std)}.",
        f"- Weights: checkpoint `{m.checkpoint}` from epoch {m.checkpoint_epoch}.",
        f"- {output_text(m)}", "",
        "## Data",
        f"- Dataset fingerprint `{m.dataset_fingerprint}`; images per split: "
        + (", ".join(f"{k} {v}" for k, v in counts.items()) or "unknown") + ".", "",
        "## Evaluation (held-out test split)",
    ]
    lines += _metric_lines(m)
    lines += [
        "", "## Intended use", INTENDED_USE, "",
        "## Limits", *(f"- {line}" for line in limits(m)), "",
        "## Lineage",
        f"- Run directory: `{m.source_run_dir}`; MLflow run: `{m.mlflow_run_id or 'none'}`.",
        f"- Config SHA-256 `{m.config_sha256}`; git commit `{m.git_commit}` (dirty: {m.git_dirty}).",
        f"- plantpheno {m.plantpheno_version}.", "",
    ]
    return "\n".join(lines)


def _metric_lines(meta: ModelMeta) -> list[str]:
    metrics = meta.test_metrics or {}
    if not metrics:
        return ["No test evaluation was recorded."]
    lines = [f"- {k}: {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float))]
    ci = meta.confidence_interval
    if ci is not None and ci.known:
        lines.append(f"- {ci.confidence:.0%} bootstrap CI of {ci.metric}: {ci.low:.4f} to {ci.high:.4f} "
                     f"({ci.n_resamples} resamples)")
    return lines
