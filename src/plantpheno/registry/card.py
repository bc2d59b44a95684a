"""The model card: what a model is for, what it was trained and tested on, and how well it did."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plantpheno.registry.package import ModelPackage
    from plantpheno.rundir import RunDir


def model_card(package: ModelPackage, *, run: RunDir) -> str:
    """Markdown: model, data, metrics with CI, intended use, limits, lineage."""
    m = package.meta
    dataset = run.read_dataset_info()
    counts = dataset.get("num_images", {})
    what = (f"{len(m['class_names'])} classes: {', '.join(m['class_names'])}" if m["task"] == "classification"
            else f"a numeric trait (training mean {m['target_mean']:.4g}, std {m['target_std']:.4g})")
    lines = [
        f"# Model card: {m['backbone']} ({m['task']})", "",
        "## Model", f"- Backbone: `{m['backbone']}` (timm {m['timm_version']}), predicts {what}.",
        f"- Input: RGB, {_resize_text(m)}; normalised with mean {m['mean']} and std {m['std']}.",
        f"- Weights: checkpoint `{m['checkpoint']}` from epoch {m['checkpoint_epoch']}.",
        f"- Probabilities: softmax of the logits / {float(m.get('temperature') or 1.0):.4g} (temperature fitted on the "
        f"validation split; 1 = none); test-time augmentation: {m.get('tta') or 'none'}.", "",
        "## Data",
        f"- Dataset fingerprint `{m['dataset_fingerprint']}`; images per split: "
        + (", ".join(f"{k} {v}" for k, v in counts.items()) or "unknown") + ".", "",
        "## Evaluation (held-out test split)",
    ]
    lines += _metric_lines(m)
    lines += [
        "", "## Intended use",
        "Research and decision support on images like the training images (same crops, camera, background "
        "and lighting). Check predictions against expert judgement before acting on them.", "",
        "## Limits",
        "- Accuracy on photos taken in other conditions (field vs. lab, other cameras, other cultivars) is "
        "unknown until measured; lab datasets such as PlantVillage carry background cues that do not transfer.",
        "- Classes not in the list above are forced into one of them.", "",
        "## Lineage",
        f"- Run directory: `{m['source_run_dir']}`; MLflow run: `{m.get('mlflow_run_id') or 'none'}`.",
        f"- Config SHA-256 `{m['config_sha256']}`; git commit `{m['git_commit']}` (dirty: {m['git_dirty']}).",
        f"- plantpheno {m['plantpheno_version']}.", "",
    ]
    return "\n".join(lines)


def _resize_text(meta: dict) -> str:
    size = meta["image_size"]
    resize = meta.get("resize", "crop")
    if resize == "pad":
        return (f"the whole image with its longer side resized to {size} px and letterboxed into a {size} px square "
                f"(data.resize: pad; the border is the normalisation mean)")
    if resize == "stretch":
        return f"the whole image stretched to {size} x {size} px (data.resize: stretch)"
    return (f"resized (shorter side) to {size} px and centre-cropped (data.resize: crop: the ends of wide or tall "
            f"images are not seen)")


def _metric_lines(meta: dict) -> list[str]:
    metrics = meta.get("test_metrics") or {}
    if not metrics:
        return ["No test evaluation was recorded."]
    lines = [f"- {k}: {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float))]
    ci = meta.get("confidence_interval") or {}
    if ci.get("low") is not None:
        lines.append(f"- {ci['confidence']:.0%} bootstrap CI of {ci['metric']}: {ci['low']:.4f} to {ci['high']:.4f} "
                     f"({ci['n_resamples']} resamples)")
    return lines
