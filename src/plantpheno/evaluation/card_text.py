"""The lines a model card (the report's and the registry's) says about a model's input, outputs and limits,
written once from the checkpoint's metadata so both cards say the same, and only what applies to the task."""

from __future__ import annotations

from plantpheno.records.model_meta import BandsMeta, ModelMeta

INTENDED_USE = ("Research and decision support on images like the training images (same crops, camera, background "
                "and lighting). Check predictions against expert judgement before acting on them.")
_CONDITIONS = ("Accuracy on photos taken in other conditions (field vs. lab, other cameras, other cultivars) is "
               "unknown until measured; lab datasets such as PlantVillage carry background cues that do not transfer.")


def input_text(meta: ModelMeta) -> str:
    """How an image becomes the model's input (``data.resize`` and the size), as the model saw it."""
    size, resize = meta.image_size, meta.resize
    kind = "RGB"
    if isinstance(meta.bands, BandsMeta):  # data.bands: say which, and that they are not RGB pixels
        kind = (f"bands {', '.join(meta.bands.names)} (data.bands; each clipped to its training 1st-99th "
                f"percentile and standardised)")
    if resize == "pad":
        return (f"{kind}, the whole image with its longer side resized to {size} px and letterboxed into a {size} px "
                f"square (data.resize: pad; the border is the normalisation mean)")
    if resize == "stretch":
        return f"{kind}, the whole image stretched to {size} x {size} px (data.resize: stretch)"
    return (f"{kind}, resized (shorter side) to {size} px and centre-cropped (data.resize: crop: the ends of wide or "
            f"tall images are not seen)")


def output_text(meta: ModelMeta) -> str:
    """What the model outputs: class probabilities (softmax with the fitted temperature) for a classifier, the
    trait value in its own units for a regression model; and the test-time augmentation."""
    tta = meta.applied_tta
    if not meta.is_classification:
        stats = (f" (training mean {meta.target_mean:.4g}, std {meta.target_std:.4g})"
                 if meta.target_mean is not None and meta.target_std is not None else "")
        counts = "; counts are read as the rounded value" if meta.counts else ""
        return (f"Prediction: the trait value in the units of the training targets, the network's output "
                f"de-standardised with the training targets' mean and std{stats}{counts}; test-time augmentation: "
                f"{tta}.")
    temperature = meta.applied_temperature
    return (f"Probabilities: softmax of the logits / {temperature:.4g} (temperature fitted on the validation split; "
            f"1 = none); test-time augmentation: {tta}.")


def limits(meta: ModelMeta) -> list[str]:
    """What the model cannot be trusted for, by task."""
    if not meta.is_classification:
        return [_CONDITIONS, "Plants unlike the training ones (other sizes, growth stages or counts outside the "
                             "training range) are predicted by extrapolation; check such values against measurements."]
    return [_CONDITIONS, "Classes not in the training list are forced into one of them."]
