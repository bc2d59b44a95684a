"""The OOD score and the ``unknown`` flag inside an exported graph (ONNX, TorchScript).

A package with a detector (:mod:`plantpheno.evaluation.ood`) exports with two more outputs besides the
probabilities (or the trait): ``ood_score`` (float32, higher = less like the training data) and ``unknown`` (bool,
``ood_score > threshold``). They are computed in the graph as :meth:`OODDetector.scores` computes them in
``predict``: from the network's plain logits (no TTA, as the threshold was fitted) at the detector's temperature,
and for the feature scores from the L2-normalised pooled features of the same pass against the detector's own
constants: the float16 training bank (kept float16 in the file, cast in the graph), the class means and
precision matrix (float64, as ``fit_mahalanobis`` made them) and the energy+knn standardisation. The scores are
computed as ``ood.py`` computes them (features normalised in float32; knn: the nearest candidates ranked in
float32, then measured exactly in float64; the rest in float64), compared with the threshold in float64, and only
the output is rounded to float32, so the flag is ``predict``'s flag.

The threshold and the detector's settings are also written into the file (ONNX metadata ``plantpheno.ood``, a
TorchScript extra file ``plantpheno_ood.json``), so a deployment can read what the flag means.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from plantpheno.evaluation.ood import KNN_MARGIN, OODDetector, record
from plantpheno.training.features import pooled_features

OOD_KEY = "plantpheno.ood"  # ONNX metadata: the detector's settings and threshold, as JSON
OOD_FILE = "plantpheno_ood.json"  # the same, as a TorchScript extra file
OUTPUTS = ("ood_score", "unknown")


class OODScore(nn.Module):
    """``OODDetector.scores`` and ``unknown`` in torch, from plain logits and pooled features, with the detector's
    constants as buffers: returns ``(score float32 (N,), unknown bool (N,))``."""

    def __init__(self, detector: OODDetector) -> None:
        super().__init__()
        self.score, self.temperature = detector.score, float(detector.temperature)
        self.threshold = float(detector.threshold)
        self.norms = {name: (float(m), float(s)) for name, (m, s) in (detector.norms or {}).items()}
        self.k = 0
        if detector.score in ("knn", "energy+knn"):
            assert detector.bank is not None, "a fitted knn detector has its training bank"
            bank = torch.from_numpy(np.ascontiguousarray(detector.bank, dtype=np.float16))
            self.register_buffer("bank", bank)  # float16 in the file: half the bytes of float32
            self.register_buffer("bank_sq", (bank.float() ** 2).sum(dim=1))  # |b|^2, as knn_score ranks by it
            self.k = min(int(detector.k or 1), len(bank))  # as knn_score: at most the bank's size
            self.m = min(self.k + KNN_MARGIN, len(bank))  # the candidates it measures exactly
        if detector.score == "mahalanobis":
            assert detector._maha is not None, "a fitted mahalanobis detector has its class means and precision"
            means, precision = detector._maha
            self.register_buffer("means", torch.from_numpy(np.asarray(means, dtype=np.float64)))
            self.register_buffer("precision", torch.from_numpy(np.asarray(precision, dtype=np.float64)))

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score = self._score(self.score, logits, features)
        return score.float(), score > self.threshold

    def _score(self, name: str, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if name == "energy+knn":
            total = torch.zeros_like(logits[:, 0], dtype=torch.float64)
            for part in ("energy", "knn"):
                mean, std = self.norms[part]
                total = total + (self._score(part, logits, features) - mean) / std
            return total
        if name in ("msp", "energy"):
            z = logits.double() / self.temperature
            if name == "msp":
                return 1.0 - z.softmax(dim=1).max(dim=1).values
            return -self.temperature * torch.logsumexp(z, dim=1)
        q = features.float() / features.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
        if name == "knn":  # as knn_score: the m nearest by |b|^2 - 2 a.b (float32), then |a - b|^2 in float64
            near = (self.bank_sq - 2.0 * (q @ self.bank.float().T)).topk(self.m, dim=1, largest=False).indices
            exact = ((q.double()[:, None, :] - self.bank[near].double()) ** 2).sum(dim=2)
            kth = exact.min(dim=1).values if self.k == 1 else exact.topk(self.k, dim=1, largest=False).values[:, -1]
            return kth.sqrt()
        d = q.double()[:, None, :] - self.means[None]  # (N, C, D): the distance to every class mean at once
        return ((d @ self.precision) * d).sum(dim=2).min(dim=1).values.clamp_min(0.0).sqrt()


class WithOOD(nn.Module):
    """The network's raw outputs (through ``outputs``: the TTA average or the network itself) with the OOD score
    and flag of the same pass, as :meth:`Predictor._forward` makes them: the feature scores from the pooled
    features, and the logit scores from the head on them (the network's plain output where there is no head)."""

    def __init__(self, net: nn.Module, outputs: nn.Module, detector: OODDetector) -> None:
        super().__init__()
        self.net, self.outputs, self.ood = net, outputs, OODScore(detector)
        self.tta = outputs is not net
        self.needs_features = detector.needs_features
        head = net.get_classifier() if hasattr(net, "get_classifier") else None
        self.head = head if isinstance(head, nn.Module) and self.needs_features else None

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(raw outputs, plain logits, pooled features)`` of normalised images (features: an empty column
        where the score needs none)."""
        if self.head is not None:
            features = pooled_features(self.net)(x).float()
            plain = self.head(features).float()
            raw = self.outputs(x) if self.tta else plain
        else:
            raw = self.outputs(x)
            plain = self.net(x).float() if self.tta else raw.float()
            features = pooled_features(self.net)(x).float() if self.needs_features else plain[:, :0]
        return raw, plain, features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raw, plain, features = self.parts(x)
        score, unknown = self.ood(plain, features)
        return raw, score, unknown


def reference(module: WithOOD, detector: OODDetector, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The parity check's reference: ``ood.py``'s own scores and flags (numpy) of the same pass's logits and
    features, so the check holds the graph's arithmetic to ``OODDetector.scores``."""
    with torch.no_grad():
        _, plain, features = module.parts(x)
    scores = detector.scores(logits=plain.numpy(), features=features.numpy() if detector.needs_features else None)
    return scores, detector.unknown(scores)


def metadata(detector: OODDetector) -> dict[str, Any]:
    """What the file says about its OOD outputs (ONNX metadata ``plantpheno.ood``, TorchScript extra file)."""
    return {"outputs": {"ood_score": "float32 (N,), higher = less like the training images",
                        "unknown": "bool (N,): ood_score > threshold"},
            "threshold": detector.threshold, "describe": detector.describe(),
            "detector": {k: v for k, v in record(detector).items() if k != "threshold"}}


def missing_line(source: str, fmt: str) -> str:
    """The one line an export without a detector says."""
    return (f"{source} has no OOD threshold (trained or registered before plantpheno fitted one, or with "
            f"evaluation.ood.enabled: false): the {fmt} file gives its outputs only, no ood_score and no unknown")


def compare(expected: tuple[np.ndarray, np.ndarray], actual: tuple[np.ndarray, np.ndarray], threshold: float,
            tolerance: float) -> tuple[float, int, str | None]:
    """The exported score and flag against ``ood.py``'s: ``(max scaled |difference| of the score, images whose
    score is within tolerance of the threshold, what failed or None)``. A score's difference is scaled by
    ``max(1, |score|)`` (an energy score of -40 carries float32's rounding of 40); a flag must be equal except
    where the score is within tolerance of the threshold, where rounding may tip it either way."""
    want_score, want_flag = (np.asarray(a).reshape(-1) for a in expected)
    score, flag = (np.asarray(a).reshape(-1) for a in actual)
    if score.shape != want_score.shape or flag.shape != want_flag.shape:
        return math.inf, 0, f"ood_score/unknown shapes {score.shape}/{flag.shape}, expected {want_score.shape}"
    diff = float(np.max(np.abs(score - want_score) / np.maximum(1.0, np.abs(want_score)), initial=0.0))
    near = np.abs(want_score - threshold) <= tolerance * max(1.0, abs(threshold))
    wrong = (flag.astype(bool) != want_flag.astype(bool)) & ~near
    if not math.isfinite(diff) or diff > tolerance:
        return diff, int(near.sum()), f"ood_score differs by {diff:.2e} (scaled by max(1, |score|))"
    if wrong.any():
        return diff, int(near.sum()), (f"unknown differs on {int(wrong.sum())} of {len(flag)} images whose score "
                                       f"is not within tolerance of the threshold {threshold:.6g}")
    return diff, int(near.sum()), None
