"""How long a candidate will take, before it runs: a prior cost model, scaled by what the candidates that ran took.

The prior is the 2-core AMD EPYC's (torch 2.14.1, benchmarks/results/backbone_pass.md and recipe_choice.md):
Lite0 at 224 px passes 22 ms an image; a head on cached features trains at ~0.05 ms an image an epoch; fine-tuning
one block on cached activations costs 3.7 ms an image an epoch, two 12 ms, three ~20 ms; a run's fixed part
(data, model, evaluation) ~8 s plus 4 ms an image, and 0.25 s an epoch (validation, checkpoints, the log). After each candidate the prior is rescaled by the ratio of the
measured to the estimated seconds of the candidates so far, so a faster machine (or a GPU) is learnt from the
first candidate on.

The time kept for the final run is measured where it can be: a candidate that ran on the validation split trained
exactly what its final run trains, so its seconds less its backbone pass (timed, :class:`~plantpheno.budget.deadline.
PassClock`) are the final run's training part, and the timed pass sizes the final run's test evaluation; both are
kept with a margin (:data:`MARGIN`), since the machine's load changes during a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plantpheno.budget.ladder import Candidate

PASS_S = 0.022  # a Lite0 224 px backbone pass, seconds an image
HEAD_S = 0.00005  # head training on cached features, seconds an image an epoch
EPOCH_S = 0.25  # an epoch's fixed part: validation, checkpoints, the log
FINE_TUNE_S = {0: 0.0, 1: 0.0037, 2: 0.012, 3: 0.020}  # seconds an image an epoch, Lite0 224 px
FIXED_S, FIXED_PER_IMAGE_S = 8.0, 0.004
TTA_VIEWS = 4  # flips: identity, horizontal, vertical, half turn
FULL_MODEL_S = 0.03  # a whole-model forward pass, seconds an image (evaluation with TTA, the test split)
REPORT_S = 10.0  # report.html with Grad-CAM, the trackers' artifacts
MARGIN = 1.25  # the final run's kept time over its estimate: a loaded machine's speed drifts within minutes


@dataclass(frozen=True)
class DataSize:
    """Images per split (and how many folds score each candidate)."""

    train: int
    val: int
    test: int
    folds: int = 1  # 1 = the validation split; K = group K-fold on train+val

    @property
    def total(self) -> int:
        return self.train + self.val + self.test


@dataclass
class Estimator:
    """Prior seconds of a candidate, times a factor learnt from the ones that ran."""

    size: DataSize
    head_epochs: int
    fine_tune_epochs: int
    measured: list[tuple[float, float]] = field(default_factory=list)  # (prior estimate, measured seconds)
    probed: float = 1.0  # this machine's speed against the reference before any candidate ran (:func:`probe`)
    pass_s: float | None = None  # measured seconds of a Lite0 224 px pass an image (the latest candidate's)
    runs: dict[Candidate, float] = field(default_factory=dict)  # seconds of a candidate's run less its pass, a fold

    @property
    def factor(self) -> float:
        """Measured over estimated seconds so far (the probe's factor before any candidate ran), kept within
        [0.1, 10]."""
        if not self.measured:
            return self.probed
        prior, actual = (sum(x) for x in zip(*self.measured, strict=True))
        return min(10.0, max(0.1, actual / prior)) if prior > 0 else 1.0

    def prior(self, candidate: Candidate, *, pass_cached: bool) -> float:
        """Seconds on the reference machine: the pass (unless cached), then per fold the fixed part and training."""
        s = self.size
        trainval = s.train + s.val
        pass_s = 0.0 if pass_cached else trainval * PASS_S * candidate.relative_cost
        # in K-fold each fold trains on (K-1)/K of train+val
        train_images = s.train if s.folds == 1 else trainval * (s.folds - 1) / s.folds
        fit = train_images * (self.head_epochs * HEAD_S + self.fine_tune_epochs * FINE_TUNE_S[candidate.blocks]
                              * candidate.relative_cost ** 0.5)  # the fine-tuned blocks are a part of the network
        tta = (s.val if s.folds == 1 else trainval) * TTA_VIEWS * FULL_MODEL_S * candidate.relative_cost \
            if candidate.tta != "none" else 0.0
        return pass_s + s.folds * (self.fixed(candidate) + fit) + tta

    def fixed(self, candidate: Candidate) -> float:
        """A run's fixed part on the reference machine (data, model, evaluation, each epoch's overhead)."""
        return FIXED_S + FIXED_PER_IMAGE_S * self.size.total + self._epochs(candidate) * EPOCH_S

    def seconds(self, candidate: Candidate, *, pass_cached: bool) -> float:
        """The estimate for this machine: the prior times the measured factor once a candidate ran; before, the
        probe (a timed backbone pass) scales the network's compute only. The fixed parts are Python and disk work
        that a loaded machine slows far less than a convolution: in benchmarks/results/budget.json (10m arm, probe
        ~3x) the whole final run, 60 epochs and its fixed part included, took 27 s, where the prior scaled by the
        probe charged its fixed part alone ~96 s."""
        prior = self.prior(candidate, pass_cached=pass_cached)
        if self.measured:
            return prior * self.factor
        fixed = self.size.folds * self.fixed(candidate)
        return (prior - fixed) * self.factor + fixed

    def final_seconds(self, candidate: Candidate) -> float:
        """The time kept for the chosen candidate's final run (trained once more on train, passes cached, then
        evaluated): measured where the candidate ran (:meth:`record_run`), else the prior; with :data:`MARGIN`."""
        s = self.size
        measured = self.runs.get(candidate)
        if measured is not None:
            train_part = measured * self.train_scale()
        else:
            fit = s.train * (self.head_epochs * HEAD_S + self.fine_tune_epochs * FINE_TUNE_S[candidate.blocks]
                             * candidate.relative_cost ** 0.5)
            fixed = self.fixed(candidate)  # as in seconds(): the probe scales compute, not the fixed part
            train_part = fit * self.factor + fixed * (self.factor if self.measured else 1.0)
        return (train_part + self.evaluation_seconds(candidate)) * MARGIN

    def setup_seconds(self) -> float:
        """A run's fixed part before its first epoch (data, model, the passes' bookkeeping), reference machine:
        Python and disk work, which load slows far less than convolutions (see :meth:`seconds`)."""
        return FIXED_S + FIXED_PER_IMAGE_S * self.size.total

    def fine_tune_epoch_seconds(self, candidate: Candidate) -> float:
        """One fine-tune epoch of a candidate's run on this machine (prior times the learnt factor)."""
        s = self.size
        train_images = s.train if s.folds == 1 else (s.train + s.val) * (s.folds - 1) / s.folds
        return (train_images * FINE_TUNE_S[candidate.blocks] * candidate.relative_cost ** 0.5 + EPOCH_S) * self.factor

    def train_scale(self) -> float:
        """The final run's training images over a candidate run's (a fold trained on (K-1)/K of train+val), at
        least 1: what scales a candidate's measured training time to the final run's."""
        s = self.size
        fold_train = s.train if s.folds == 1 else (s.train + s.val) * (s.folds - 1) / s.folds
        return max(1.0, s.train / max(fold_train, 1.0))

    def record_run(self, candidate: Candidate, *, seconds: float, pass_seconds: float, pass_images: int) -> None:
        """A candidate that finished: its seconds less its backbone pass (``pass_seconds`` over ``pass_images``,
        0 when the pass came from the store), a fold."""
        self.runs[candidate] = max(0.0, seconds - pass_seconds) / self.size.folds
        if pass_images:
            self.pass_s = pass_seconds / pass_images / candidate.relative_cost

    def _epochs(self, candidate: Candidate) -> int:
        return self.head_epochs + (self.fine_tune_epochs if candidate.blocks else 0)

    def evaluation_seconds(self, candidate: Candidate) -> float:
        """The final run's end: the test split through the whole model (with its TTA views, and val too for
        TTA), the report with Grad-CAM and the trackers' artifacts; the whole model at the measured pass speed
        where a pass was timed."""
        s = self.size
        views = TTA_VIEWS if candidate.tta != "none" else 1
        images = s.test + (s.val if candidate.tta != "none" else 0)
        per_image = FULL_MODEL_S * self.factor if self.pass_s is None else self.pass_s * FULL_MODEL_S / PASS_S
        return images * views * per_image * candidate.relative_cost + REPORT_S * self.factor

    def record(self, candidate: Candidate, *, pass_cached: bool, seconds: float) -> None:
        self.measured.append((self.prior(candidate, pass_cached=pass_cached), seconds))


PROBE_IMAGES = 8
PROBE_PASSES = 3  # timed passes of the probe; the fastest is the machine's speed, a slower one a momentary stall
# The probe's factor is kept within [0.25, 5]. Above: a fast device still pays the runs' fixed parts (data,
# checkpoints, the log). Below 5x: the worst measured-over-prior ratio of a candidate in benchmarks/results/budget.json
# (2-core EPYC, load 5-8) was 4.2 (327 s for a prior 79 s), and a probe that says more is more likely a stall than
# the machine; an optimistic estimate costs little (the candidate's deadline stops it, and its measured seconds replace
# the probe), a pessimistic one refuses a run that would have fitted (the 10x cap asked 35 min for a 4-minute recipe).
PROBE_RANGE = (0.25, 5.0)


def probe_factor(pass_seconds: list[float]) -> float:
    """The probe's factor from its timed passes of :data:`PROBE_IMAGES` images: the fastest pass over the
    reference's seconds, within :data:`PROBE_RANGE`."""
    low, high = PROBE_RANGE
    return min(high, max(low, min(pass_seconds) / (PROBE_IMAGES * PASS_S)))


def probe(device: str) -> float:
    """How much slower (> 1) or faster (< 1) than the reference this machine runs a Lite0 pass now: 8 random
    224 px images through a randomly initialised Lite0, timed :data:`PROBE_PASSES` times after a warm-up batch of
    the same shape (which creates the kernels; 0.2 s a batch on the reference), the fastest kept
    (:func:`probe_factor`). It sees the machine's load too, which the prior cannot; the first candidate's measured
    seconds replace it."""
    import time

    import timm
    import torch

    from plantpheno.device import resolve_device

    target = resolve_device(device)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval().to(target)
    images = torch.randn(PROBE_IMAGES, 3, 224, 224, device=target)
    times = []
    with torch.no_grad():
        model(images)  # the first batch of a shape creates its kernels: not timed
        for _ in range(PROBE_PASSES):
            if target.type == "cuda":
                torch.cuda.synchronize(target)
            began = time.perf_counter()
            model(images)
            if target.type == "cuda":
                torch.cuda.synchronize(target)
            times.append(time.perf_counter() - began)
    return probe_factor(times)
