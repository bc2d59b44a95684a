"""Out-of-distribution scores and the fitted detector that flags an image as ``unknown``.

Every score here is "higher = less like the training data":

- ``msp``: 1 - the maximum softmax probability (Hendrycks & Gimpel 2017), at the run's temperature;
- ``energy``: -T * logsumexp(logits / T) (Liu et al. 2020), the negative free energy;
- ``knn``: the distance from an image's L2-normalised penultimate features to its k-th nearest training image
  (Sun et al. 2022); the only score a trait (regression) model gets, since it has no class probabilities;
- ``mahalanobis``: the smallest class-conditional Mahalanobis distance with one shared covariance (Lee et al.
  2018), on the same normalised features;
- ``energy+knn``: the sum of the energy and knn scores, each standardised by its mean and standard deviation on the
  in-distribution validation images: energy separates unseen classes of leaves best, knn images that are not
  leaves at all (benchmarks/ood.py).

A :class:`OODDetector` holds the chosen score, its threshold (the ``keep`` quantile of the in-distribution
validation scores: ``keep`` of validation images stay known) and, for the feature scores, a bounded bank of
training features stored as float16. It is fitted on the train and validation splits only and stored as its own
artifact beside the model (``ood.json`` + ``ood_features.npz``, each with a checksum sidecar), not in the model's
metadata.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plantpheno.files.atomic import atomic_write_bytes, atomic_write_text, verify_checksum
from plantpheno.errors import ModelError

SCORES = ("knn", "energy", "msp", "mahalanobis", "energy+knn")
FEATURE_SCORES = ("knn", "mahalanobis", "energy+knn")
LOGIT_SCORES = ("msp", "energy", "energy+knn")
DETECTOR_FILE = "ood.json"
FEATURES_FILE = "ood_features.npz"
FORMAT = "plantpheno-ood/1"
_CHUNK = 1024  # query rows per distance block: 1024 x 5000 float32 distances is 20 MB
KNN_MARGIN = 8  # knn: candidates beyond the k-th that are measured exactly (float32 ranks them to ~1e-6)
_EXACT_BYTES = 64 << 20  # knn: at most this much for the exact distances of a block's candidates (float64)


# ----------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------


def msp_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """1 - max softmax(logits / T): 0 for a certain prediction, up to 1 - 1/C for a uniform one."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return 1.0 - (p.max(axis=1) / p.sum(axis=1))


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """-T * logsumexp(logits / T): low (very negative) for images the network responds to strongly."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    top = z.max(axis=1)
    return -temperature * (top + np.log(np.exp(z - top[:, None]).sum(axis=1)))


def normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); a zero row stays zero."""
    f = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.maximum(norms, 1e-12)


def knn_score(features: np.ndarray, bank: np.ndarray, k: int, *, exclude_self: bool = False) -> np.ndarray:
    """Euclidean distance from each normalised feature row to its ``k``-th nearest row of the normalised ``bank``
    (``exclude_self``: the query rows are the bank's, so each one's own zero distance is skipped)."""
    q, b = normalise(features), np.asarray(bank, dtype=np.float32)
    kk = min(k + int(exclude_self), len(b))
    if kk < 1:
        raise ValueError("knn_score needs at least one training feature")
    m = min(kk + KNN_MARGIN, len(b))
    b_sq = (b * b).sum(axis=1)
    rows = max(1, min(_CHUNK, _EXACT_BYTES // (m * b.shape[1] * 8)))
    out = np.empty(len(q), dtype=np.float64)
    for start in range(0, len(q), rows):
        block = q[start:start + rows]
        # rank by |b|^2 - 2 a.b (float32), then measure the m nearest exactly: |a - b|^2 of the stored float16 rows
        # in float64. "2 - 2 a.b" in float32 alone put an image ~0.003 from its own bank row (D = 1280), a floor
        # under which the square root magnified any rounding 100-fold (no exported graph could match it)
        near = np.argpartition(b_sq[None] - 2.0 * (block @ b.T), m - 1, axis=1)[:, :m]
        exact = ((block[:, None, :].astype(np.float64) - b[near].astype(np.float64)) ** 2).sum(axis=2)
        out[start:start + rows] = np.sqrt(np.partition(exact, kk - 1, axis=1)[:, kk - 1])
    return out


def fit_mahalanobis(bank: np.ndarray, labels: np.ndarray, *, shrinkage: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Class means ``(C, D)`` and the shared precision matrix ``(D, D)`` of normalised features; the covariance is
    shrunk towards its mean variance (``shrinkage``) so that it inverts when features outnumber images."""
    f = np.asarray(bank, dtype=np.float64)
    classes = np.unique(labels)
    means = np.stack([f[labels == c].mean(axis=0) for c in classes])
    centred = f - means[np.searchsorted(classes, labels)]
    cov = centred.T @ centred / max(len(f) - 1, 1)
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
    return means, np.linalg.pinv(cov, hermitian=True)


def mahalanobis_score(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """The smallest Mahalanobis distance from each normalised feature row to a class mean."""
    q = normalise(features).astype(np.float64)
    out = np.full(len(q), np.inf)
    for mean in means:
        d = q - mean
        out = np.minimum(out, ((d @ precision) * d).sum(axis=1))  # a matrix product: einsum's loop is ~100x slower
    return np.sqrt(np.clip(out, 0.0, None))


# ----------------------------------------------------------------------------------------------
# Figures of merit (the benchmark's and evaluate's)
# ----------------------------------------------------------------------------------------------


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Probability that an out-of-distribution image scores higher than an in-distribution one (ties: half)."""
    ranks = _average_ranks(np.concatenate([in_scores, out_scores]))
    n_in, n_out = len(in_scores), len(out_scores)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (scipy's rankdata, without needing scipy)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # the mean of ranks start+1 .. end
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """FPR95 as OOD papers report it: the fraction of out-of-distribution images still taken as known when the
    threshold keeps ``tpr`` of the in-distribution ones."""
    threshold = np.quantile(in_scores, tpr, method="higher")
    return float(np.mean(out_scores <= threshold))


# ----------------------------------------------------------------------------------------------
# The detector
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OODDetector:
    """A fitted OOD score and its threshold: ``score(...) > threshold`` means unknown."""

    score: str
    threshold: float
    keep: float
    temperature: float = 1.0
    k: int | None = None
    num_val_images: int = 0
    val_kept: float = 0.0  # the fraction of validation images the threshold keeps (``keep``, up to ties)
    bank: np.ndarray | None = field(default=None, repr=False, compare=False)  # normalised train features, float16
    labels: np.ndarray | None = field(default=None, repr=False, compare=False)
    num_train_images: int = 0
    # selective prediction (evaluation/selective.py), chosen on the same validation split: the lowest confidence
    # whose kept images reach target_accuracy (None: no threshold reaches it, or not a classifier)
    confidence_threshold: float | None = None
    target_accuracy: float | None = None
    # energy+knn: each part's [mean, std] on the in-distribution validation images
    norms: dict[str, list[float]] | None = None
    _maha: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def needs_features(self) -> bool:
        return self.score in FEATURE_SCORES

    def scores(self, *, logits: np.ndarray | None = None, features: np.ndarray | None = None) -> np.ndarray:
        """The detector's score of each image, from its logits (msp, energy) or pooled features (knn,
        mahalanobis)."""
        return _score(self.score, logits=logits, features=features, temperature=self.temperature, k=self.k,
                      bank=self.bank, maha=self._maha if self.score == "mahalanobis" else None, norms=self.norms)

    def unknown(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def describe(self) -> str:
        what = {"knn": f"distance to the {self.k}-th nearest of {self.num_train_images} training images",
                "mahalanobis": "class-conditional Mahalanobis distance", "msp": "1 - maximum softmax probability",
                "energy": "energy score",
                "energy+knn": f"energy + distance to the {self.k}-th nearest training image, each standardised"
                }[self.score]
        return (f"{self.score} ({what}); threshold {self.threshold:.4g} keeps {self.val_kept:.1%} of "
                f"{self.num_val_images} validation images (target {self.keep:.0%})")

    # --- files ------------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """``ood.json`` and, for the feature scores, ``ood_features.npz``, atomically, with checksum sidecars."""
        record = {"format": FORMAT, **{k: v for k, v in asdict(self).items()
                                       if k not in ("bank", "labels", "_maha")}}
        if self.bank is not None:
            buf = io.BytesIO()
            arrays = {"bank": self.bank.astype(np.float16)}
            if self.labels is not None:
                arrays["labels"] = self.labels.astype(np.int32)
            np.savez(buf, **arrays)
            atomic_write_bytes(folder / FEATURES_FILE, buf.getvalue(), checksum=True)
            record["features_file"] = FEATURES_FILE
            record["features_bytes"] = len(buf.getvalue())
        atomic_write_text(folder / DETECTOR_FILE, json.dumps(record, indent=2) + "\n", checksum=True)

    @classmethod
    def load(cls, folder: Path) -> OODDetector | None:
        """The detector stored in ``folder`` (a run or a model package), or None when there is none (a model made
        before plantpheno fitted one, or with ``evaluation.ood.enabled: false``)."""
        path = folder / DETECTOR_FILE
        if not path.is_file():
            return None
        verify_checksum(path)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ModelError(f"{path} is not valid JSON ({exc})") from None
        if record.get("format") != FORMAT or record.get("score") not in SCORES:
            raise ModelError(f"{path}: format {record.get('format')!r}, score {record.get('score')!r}; expected "
                             f"{FORMAT!r} and one of {', '.join(SCORES)}")
        bank = labels = maha = None
        if record.get("features_file"):
            features = folder / record["features_file"]
            if not features.is_file():
                raise ModelError(f"{path} names {features.name}, which is missing beside it")
            verify_checksum(features)
            with np.load(features, allow_pickle=False) as npz:
                bank = npz["bank"]
                labels = npz["labels"] if "labels" in npz.files else None
            if record["score"] == "mahalanobis":
                maha = fit_mahalanobis(bank.astype(np.float32), labels)
        names = ("score", "threshold", "keep", "temperature", "k", "num_val_images", "val_kept", "num_train_images",
                 "confidence_threshold", "target_accuracy", "norms")
        fields = {k: record[k] for k in names if k in record}
        return cls(**fields, bank=bank, labels=labels, _maha=maha)


def _score(name: str, *, logits: np.ndarray | None, features: np.ndarray | None, temperature: float,
           k: int | None, bank: np.ndarray | None,
           maha: tuple[np.ndarray, np.ndarray] | None = None,
           norms: dict[str, list[float]] | None = None) -> np.ndarray:
    if name == "energy+knn":
        if norms is None:
            raise ValueError("the energy+knn score needs the standardisation fitted on validation")
        parts = {"energy": _score("energy", logits=logits, features=None, temperature=temperature, k=k, bank=None),
                 "knn": _score("knn", logits=None, features=features, temperature=temperature, k=k, bank=bank)}
        return sum((parts[n] - norms[n][0]) / norms[n][1] for n in ("energy", "knn"))
    if name in ("msp", "energy"):
        if logits is None:
            raise ValueError(f"the {name} score needs logits")
        return (msp_score if name == "msp" else energy_score)(logits, temperature)
    if features is None or bank is None:
        raise ValueError(f"the {name} score needs features and a training bank")
    if name == "knn":
        return knn_score(features, bank, int(k or 1))
    assert maha is not None
    return mahalanobis_score(features, *maha)


def subsample(n: int, cap: int, seed: int) -> np.ndarray:
    """Indices of at most ``cap`` of ``n`` rows, sorted, drawn without replacement (all of them when n <= cap)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def fit_detector(score: str, *, keep: float, train_features: np.ndarray | None = None,
                 train_labels: np.ndarray | None = None, val_features: np.ndarray | None = None,
                 val_logits: np.ndarray | None = None, temperature: float = 1.0, k: int = 10,
                 max_train_features: int = 5000, seed: int = 0) -> OODDetector:
    """Fit ``score``'s threshold so that ``keep`` of the validation images stay known. The feature scores keep a
    bank of at most ``max_train_features`` training images (a seeded subsample), normalised, as float16."""
    if score not in SCORES:
        raise ValueError(f"unknown OOD score {score!r}; expected one of {', '.join(SCORES)}")
    bank = labels = maha = None
    num_train = 0
    if score in FEATURE_SCORES:
        if train_features is None or val_features is None or not len(train_features):
            raise ValueError(f"the {score} score needs training and validation features")
        picked = subsample(len(train_features), max_train_features, seed)
        bank = normalise(train_features[picked]).astype(np.float16)
        labels = train_labels[picked] if train_labels is not None else None
        num_train = len(picked)
        if score == "mahalanobis":
            if labels is None:
                raise ValueError("the mahalanobis score needs class labels (a classification run)")
            maha = fit_mahalanobis(bank.astype(np.float32), labels)
    norms = None
    if score == "energy+knn":
        norms = {name: _mean_std(_score(name, logits=val_logits, features=val_features, temperature=temperature,
                                        k=k, bank=bank)) for name in ("energy", "knn")}
    val = _score(score, logits=val_logits, features=val_features, temperature=temperature, k=k, bank=bank,
                 maha=maha, norms=norms)
    if not len(val):
        raise ValueError("fitting the OOD threshold needs at least one validation image")
    threshold = float(np.quantile(val, keep, method="higher"))
    return OODDetector(score=score, threshold=threshold, keep=keep, temperature=temperature,
                       k=k if score in ("knn", "energy+knn") else None, num_val_images=len(val),
                       val_kept=float(np.mean(val <= threshold)), bank=bank, labels=labels,
                       num_train_images=num_train, norms=norms, _maha=maha)


def _mean_std(values: np.ndarray) -> list[float]:
    """Mean and standard deviation (at least 1e-12: a constant score must not divide by zero)."""
    return [float(np.mean(values)), max(float(np.std(values)), 1e-12)]


def all_scores(*, logits: np.ndarray | None, features: np.ndarray, bank: np.ndarray,
               labels: np.ndarray | None, ks: Sequence[int] = (10,), temperature: float = 1.0,
               maha: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every score this module has for the same images (the benchmark compares them): ``knn@k`` for each k."""
    out: dict[str, np.ndarray] = {}
    if logits is not None:
        out["msp"] = msp_score(logits, temperature)
        out["energy"] = energy_score(logits, temperature)
    for k in ks:
        out[f"knn@{k}"] = knn_score(features, bank, k)
    if maha is not None:
        out["mahalanobis"] = mahalanobis_score(features, *maha)
    return out


def describe_missing(source: str) -> str:
    """The one line said when a model has no detector."""
    return (f"{source} has no OOD threshold (it was trained or registered before plantpheno fitted one, or with "
            f"evaluation.ood.enabled: false): predictions have no ood_score and no unknown flag")


def record(detector: OODDetector) -> dict[str, Any]:
    """The detector's settings as plain values (for evaluation files and the report)."""
    return {k: v for k, v in asdict(detector).items() if k not in ("bank", "labels", "_maha")}
