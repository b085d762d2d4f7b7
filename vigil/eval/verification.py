"""Face-verification protocol maths (pure numpy): LFW View 2 pairs, 10-fold accuracy, TAR at FAR, ROC and AUC.

Conventions
-----------
* A *score* is a similarity (cosine of unit embeddings): higher means "more likely the same person".
* A pair is *accepted* ("same") when ``score > threshold`` (strictly greater).
* Best-accuracy thresholds are searched exactly: the candidates are the midpoints between consecutive distinct
  scores of the data the threshold is fitted on, plus one below the lowest and one above the highest score. A
  midpoint never equals a score, so ties cannot make the result depend on ``>`` versus ``>=``. When several
  candidates reach the best accuracy, the lowest one is taken.
* LFW 10-fold protocol: for each fold k, the threshold is fitted on the other nine folds only and the accuracy is
  measured on fold k; the report is the mean and the population standard deviation (``ddof=0``, as in the
  usual LFW tables) of the ten fold accuracies.
* TAR at FAR f: computed on all pairs (LFW: 6,000 pairs, 3,000 of them different-person pairs). With N impostor
  (different-person) scores sorted in descending order ``s_0 >= s_1 >= ...``, the number of false accepts allowed is
  ``k = floor(f * N)`` and the threshold is the order statistic ``s_k`` (no interpolation); a pair is accepted when
  ``score > s_k``, so at most k impostors are accepted (exactly k when there are no ties at ``s_k``). On LFW,
  f = 1e-3 and N = 3,000 give k = 3: the threshold lets at most 3 impostor pairs through. TAR is the fraction of
  genuine (same-person) pairs with ``score > s_k``. The achieved FAR (accepted impostors / N) is returned too.
* ROC: one point per distinct score threshold, from (FAR 0, TAR 0) to (1, 1); tied scores form one step (a
  diagonal segment). AUC is the trapezoid area under it, which equals the probability that a random genuine pair
  scores above a random impostor pair, ties counted one half (the Mann-Whitney statistic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vigil.errors import VigilError

LFW_FOLDS = 10
LFW_PAIRS_PER_HALF_FOLD = 300


@dataclass(frozen=True)
class VerificationPair:
    """One verification pair: two image paths (relative to the dataset root) and the ground truth."""

    path1: str
    path2: str
    same: bool
    fold: int  # 0-based fold index (0 when the source has no folds)


@dataclass(frozen=True)
class RocCurve:
    """ROC points, thresholds descending: accept when ``score > thresholds[i]`` gives (far[i], tar[i])."""

    far: np.ndarray  # (P,) float64, false accept rate, from 0 to 1
    tar: np.ndarray  # (P,) float64, true accept rate, from 0 to 1
    thresholds: np.ndarray  # (P,) float64; thresholds[0] = +inf

    @property
    def auc(self) -> float:
        return float(np.trapezoid(self.tar, self.far))


@dataclass(frozen=True)
class TarAtFar:
    """TAR at a target FAR (see the module docstring for the threshold rule)."""

    target_far: float
    threshold: float
    tar: float
    far: float  # achieved false accept rate, <= target_far
    false_accepts_allowed: int  # floor(target_far * impostors)
    impostors: int


@dataclass(frozen=True)
class FoldedAccuracy:
    """The k-fold protocol result: per-fold thresholds (fitted on the other folds) and test accuracies."""

    fold_accuracies: np.ndarray  # (K,) float64
    fold_thresholds: np.ndarray  # (K,) float64

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_accuracies))


def _lfw_image(name: str, number: str, path: Path, line_no: int) -> str:
    if not number.isdigit():
        raise VigilError(f"{path}: line {line_no}: image number must be a positive integer, got {number!r}")
    return f"{name}/{name}_{int(number):04d}.jpg"


def parse_lfw_pairs(path: Path) -> list[VerificationPair]:
    """Read an LFW View 2 ``pairs.txt``: header ``<folds> <n>``, then per fold n same rows then n different rows.

    Same rows are ``name n1 n2``; different rows are ``name1 n1 name2 n2`` (whitespace separated). Image paths
    become ``name/name_NNNN.jpg``. Any malformed line raises :class:`VigilError` naming the file and the line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise VigilError(f"{path}: cannot read pairs file ({exc.__class__.__name__})") from None
    if not lines:
        raise VigilError(f"{path}: line 1: empty pairs file, expected the header '<folds> <pairs per half fold>'")
    header = lines[0].split()
    if len(header) != 2 or not all(part.isdigit() for part in header) or int(header[0]) < 1 or int(header[1]) < 1:
        raise VigilError(f"{path}: line 1: expected the header '<folds> <pairs per half fold>', got {lines[0]!r}")
    folds, per_half = int(header[0]), int(header[1])
    rows = [(i + 2, line) for i, line in enumerate(lines[1:]) if line.strip()]
    expected = folds * 2 * per_half
    if len(rows) != expected:
        raise VigilError(
            f"{path}: expected {expected} pair rows after the header '{folds} {per_half}', found {len(rows)}"
        )
    pairs = []
    for index, (line_no, line) in enumerate(rows):
        fold, within = divmod(index, 2 * per_half)
        same = within < per_half
        parts = line.split()
        if same and len(parts) == 3:
            pairs.append(
                VerificationPair(
                    _lfw_image(parts[0], parts[1], path, line_no),
                    _lfw_image(parts[0], parts[2], path, line_no),
                    True,
                    fold,
                )
            )
        elif not same and len(parts) == 4:
            pairs.append(
                VerificationPair(
                    _lfw_image(parts[0], parts[1], path, line_no),
                    _lfw_image(parts[2], parts[3], path, line_no),
                    False,
                    fold,
                )
            )
        else:
            kind = "'name n1 n2' (same person)" if same else "'name1 n1 name2 n2' (different people)"
            raise VigilError(f"{path}: line {line_no}: expected {kind}, got {line.strip()!r}")
    return pairs


def _as_arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    return scores, labels


def threshold_candidates(scores: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive distinct scores, plus one below the minimum and one above the maximum."""
    distinct = np.unique(np.asarray(scores, dtype=np.float64))
    if distinct.size == 0:
        return np.array([0.0])
    middle = (distinct[:-1] + distinct[1:]) / 2.0
    return np.concatenate([[distinct[0] - 1.0], middle, [distinct[-1] + 1.0]])


def accuracy_at(scores, labels, threshold: float) -> float:
    """Fraction of pairs decided correctly when accepting ``score > threshold``."""
    scores, labels = _as_arrays(scores, labels)
    return float(np.mean((scores > threshold) == labels)) if scores.size else float("nan")


def best_threshold(scores, labels) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy on these pairs; ties -> the lowest such threshold."""
    scores, labels = _as_arrays(scores, labels)
    if scores.size == 0:
        raise ValueError("no pairs to fit a threshold on")
    candidates = threshold_candidates(scores)
    order = np.sort(scores[labels])
    impostors = np.sort(scores[~labels])
    # For threshold t: correct = genuine above t + impostors at or below t (no score equals a midpoint).
    genuine_above = order.size - np.searchsorted(order, candidates, side="right")
    impostor_below = np.searchsorted(impostors, candidates, side="right")
    correct = genuine_above + impostor_below
    best = int(np.argmax(correct))
    return float(candidates[best]), float(correct[best] / scores.size)


def kfold_accuracy(scores, labels, folds) -> FoldedAccuracy:
    """The k-fold protocol: each fold's threshold is fitted on all other folds, then applied to that fold."""
    scores, labels = _as_arrays(scores, labels)
    folds = np.asarray(folds).ravel()
    if folds.shape != scores.shape:
        raise ValueError(f"folds {folds.shape} and scores {scores.shape} differ in length")
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise ValueError("the k-fold protocol needs at least two folds")
    accuracies, thresholds = [], []
    for fold in fold_ids:
        test = folds == fold
        threshold, _ = best_threshold(scores[~test], labels[~test])
        thresholds.append(threshold)
        accuracies.append(accuracy_at(scores[test], labels[test], threshold))
    return FoldedAccuracy(np.asarray(accuracies), np.asarray(thresholds))


def tar_at_far(scores, labels, target_far: float) -> TarAtFar:
    """TAR at ``target_far`` with the order-statistic threshold described in the module docstring."""
    scores, labels = _as_arrays(scores, labels)
    impostors = np.sort(scores[~labels])[::-1]
    genuine = scores[labels]
    if impostors.size == 0 or genuine.size == 0:
        raise ValueError("TAR at FAR needs both same-person and different-person pairs")
    if not 0.0 <= target_far < 1.0:
        raise ValueError(f"target FAR must be in [0, 1), got {target_far}")
    allowed = int(math.floor(target_far * impostors.size + 1e-9))
    threshold = float(impostors[allowed])
    return TarAtFar(
        target_far=float(target_far),
        threshold=threshold,
        tar=float(np.mean(genuine > threshold)),
        far=float(np.mean(impostors > threshold)),
        false_accepts_allowed=allowed,
        impostors=int(impostors.size),
    )


def roc_curve(scores, labels) -> RocCurve:
    """ROC over every distinct score, thresholds descending (tied scores move FAR and TAR together)."""
    scores, labels = _as_arrays(scores, labels)
    n_genuine, n_impostor = int(labels.sum()), int((~labels).sum())
    if n_genuine == 0 or n_impostor == 0:
        raise ValueError("a ROC curve needs both same-person and different-person pairs")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # last index of each run of equal scores
    ends = np.r_[np.nonzero(np.diff(sorted_scores))[0], sorted_scores.size - 1]
    true_accepts = np.cumsum(sorted_labels)[ends]
    false_accepts = (ends + 1) - true_accepts
    far = np.r_[0.0, false_accepts / n_impostor]
    tar = np.r_[0.0, true_accepts / n_genuine]
    # accepting score > t: threshold just below each distinct score (the next distinct score, or -inf at the end)
    distinct = sorted_scores[ends]
    thresholds = np.r_[np.inf, distinct[1:], -np.inf]
    return RocCurve(far=far, tar=tar, thresholds=thresholds)


def cosine_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays (rows need not be unit norm)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)
