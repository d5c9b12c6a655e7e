"""Alignment of many models at every layer pair, calibrated against the null of the best layer pair.

Changes from the plan's sketch (PRH_API.md): ``vision_feature_set`` / ``text_feature_set`` also take
``cache`` (an ActivationCache) and ``key`` (what names the cached entry) and text ``batch_size``; the best
layer pair is always the max (no ``best`` option); ``AlignSettings`` gained ``pairs``, ``device``,
``clip_quantile`` and ``exact_quantile``; ``sweep`` takes ``repeats``; ``write_alignment`` takes
``layer_plots``; layers that are the same for every sample are dropped with a warning (``informative``).

API:

- ``AlignSettings``: metrics, topk, prh_protocol, clip_quantile, exact_quantile, n_permutations, seed,
  alpha, pairs (``"all"`` or ``"cross_modal"``), device. ``n_permutations=0`` skips calibration (p etc.
  NaN).
- ``prepare(fs, settings) -> list[Tensor]``: the layers as the metric sees them (PRH protocol or as given).
- ``pair_alignment(a, b, metric, settings, prepared=None) -> PairAlignment``: layer x layer ``scores``,
  ``best_pair``, ``best_layers``, ``score``, ``p_value``, ``null95``, ``threshold``, ``calibrated`` (the
  best against the null of the max over layer pairs, :func:`stitching.metrics.permutation_test_max`).
- ``alignment_matrices(sets, settings) -> AlignmentResult``: ``.matrix(metric, value)`` is an N x N
  DataFrame (value: ``score``, ``calibrated``, ``p_value``, ``null95``); ``.table()`` one row per pair and
  metric; ``.layer_table()`` every layer pair's score; ``.pairs[(metric, a, b)]`` the PairAlignment.
- ``write_alignment(outdir, result, order=None, layer_plots=True)``: CSVs and heatmaps (``order``: names,
  e.g. by competence).
- ``informative(fs)``: ``fs`` without layers that are the same for every sample (``alignment_matrices``
  applies it, with a warning).
- ``sweep(sets, settings, ks, ns, repeats=1) -> DataFrame``: alignment as a function of k and n.

PRH protocol (minyoungg/platonic-rep, ``measure_alignment.prepare_features`` and ``compute_score``): each
model's features are clipped at the 0.95 quantile of |x| (``metrics.remove_outliers``; by default, as
there without ``--precise``, the mean over samples of each sample's quantile; ``exact_quantile`` sorts all
values instead), jointly over all layers when they have one width (PRH stores them as one N x L x D tensor)
and layer by layer otherwise; then every row is L2-normalised, the metric is computed at every layer pair
(``topk`` for the k-NN metrics, k = 10) and the best pair is kept. Mutual k-NN alignment depends on k and
falls as n grows (arXiv 2604.18572): hence ``sweep``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stitching._utils import atomic_write
from stitching.metrics import get_metric, permutation_test_max
from stitching.metrics.permutation import _permutations, _statistics
from stitching.prh.features import FeatureSet
from stitching.prh.knn_layers import knn_lists, mutual_knn_max_null, mutual_knn_scores

PairMode = Literal["all", "cross_modal"]
VALUES = ("score", "calibrated", "p_value", "null95", "threshold")
SYMMETRIC = {
    "linear_cka",
    "debiased_cka",
    "mutual_knn",
    "cknna",
    "procrustes",
    "procrustes_distance",
    "svcca",
}
"""Metrics with metric(x, y) == metric(y, x): one computation per unordered pair."""


@dataclass(frozen=True)
class AlignSettings:
    """How every pair of feature sets is scored."""

    metrics: tuple[str, ...] = ("mutual_knn",)
    topk: int = 10
    """k of the metrics that take ``topk`` (mutual_knn, cknna)."""
    prh_protocol: bool = True
    """Clip at the ``clip_quantile`` of |x| and L2-normalise rows first (module docstring)."""
    clip_quantile: float = 0.95
    exact_quantile: bool = False
    n_permutations: int = 200
    """Permutations of the max-over-layer-pairs null; 0 skips calibration."""
    seed: int = 0
    alpha: float = 0.05
    pairs: PairMode = "all"
    """``all`` pairs of sets, or ``cross_modal`` (vision x text) only, as the paper's matrix."""
    device: str = "cpu"
    """Where the metrics run (``cuda`` for large n and many layers)."""

    def __post_init__(self) -> None:
        for metric in self.metrics:
            get_metric(metric)  # unknown names fail with the closest matches
        if isinstance(self.topk, bool) or not isinstance(self.topk, int) or self.topk < 1:
            raise ValueError(f"topk must be an int >= 1, got {self.topk!r}")
        if not 0.0 < self.clip_quantile <= 1.0:
            raise ValueError(f"clip_quantile must be in (0, 1], got {self.clip_quantile!r}")
        if self.n_permutations < 0:
            raise ValueError(f"n_permutations must be >= 0, got {self.n_permutations!r}")
        if self.pairs not in ("all", "cross_modal"):
            raise ValueError(f"pairs must be 'all' or 'cross_modal', got {self.pairs!r}")

    def metric_kwargs(self, metric: str) -> dict[str, Any]:
        """``{"topk": k}`` for the metrics that take it, else ``{}``."""
        return {"topk": self.topk} if takes_topk(metric) else {}


@cache
def takes_topk(metric: str) -> bool:
    """Whether a registered metric has a ``topk`` argument (the k-NN metrics)."""
    return "topk" in inspect.signature(get_metric(metric).fn).parameters


def check_samples(n: int, settings: AlignSettings, what: str = "alignment") -> None:
    """``k < n`` for the k-NN metrics (an error naming both), before anything is computed."""
    knn = [m for m in settings.metrics if takes_topk(m)]
    if knn and not settings.topk < n:
        raise ValueError(
            f"{what}: the k-NN metrics {knn} need topk < n (self is excluded), got k={settings.topk} and "
            f"n={n}; lower topk or use more samples"
        )


def _row_quantile(values: Tensor, q: float) -> Tensor:
    """Per-row ``q`` quantile with linear interpolation (``torch.quantile``'s), without its size limit."""
    ordered = values.sort(dim=1).values
    position = q * (ordered.shape[1] - 1)
    low, frac = int(np.floor(position)), position - np.floor(position)
    high = min(low + 1, ordered.shape[1] - 1)
    return ordered[:, low] * (1 - frac) + ordered[:, high] * frac


def clip_outliers(feats: Tensor, q: float = 0.95, exact: bool = False) -> Tensor:
    """PRH's ``remove_outliers``: clamp to ±(the q quantile of |x|); rows are samples (any trailing shape)."""
    if q == 1:
        return feats
    magnitude = feats.abs()
    if exact:
        q_val = magnitude.reshape(-1).sort().values[min(int(q * feats.numel()), feats.numel() - 1)]
    else:
        q_val = _row_quantile(magnitude.flatten(1), q).mean()
    return feats.clamp(-q_val, q_val)


def prepare(fs: FeatureSet, settings: AlignSettings) -> list[Tensor]:
    """The layers as the metrics see them: float32 as given, or clipped and L2-normalised (PRH protocol)."""
    layers = [f.to(settings.device, torch.float32) for f in fs.features]
    if not settings.prh_protocol:
        return layers
    q, exact = settings.clip_quantile, settings.exact_quantile
    if len({f.shape[1] for f in layers}) == 1:
        clipped = list(clip_outliers(torch.stack(layers, dim=1), q, exact).unbind(1))
    else:
        clipped = [clip_outliers(f, q, exact) for f in layers]
    return [torch.nn.functional.normalize(f, p=2, dim=-1) for f in clipped]


@dataclass(frozen=True)
class PairAlignment:
    """Two feature sets scored with one metric at every layer pair; the best pair calibrated."""

    a: str
    b: str
    metric: str
    scores: Tensor = field(repr=False)
    """``(len(a.layers), len(b.layers))`` raw scores."""
    best_pair: tuple[int, int]
    best_layers: tuple[str, str]
    score: float
    p_value: float
    null95: float
    threshold: float
    calibrated: float
    n: int

    def row(self) -> dict[str, Any]:
        """A flat record (no tensors) for tables."""
        return {
            "metric": self.metric,
            "a": self.a,
            "b": self.b,
            "layer_a": self.best_layers[0],
            "layer_b": self.best_layers[1],
            **{v: getattr(self, v) for v in VALUES},
            "n": self.n,
        }


class Prepared:
    """One feature set's prepared layers, with their k-NN lists found once per k (the mutual_knn path)."""

    def __init__(self, layers: list[Tensor]) -> None:
        self.layers = layers
        self._lists: dict[int, list[Tensor]] = {}

    def knn(self, topk: int) -> list[Tensor]:
        if topk not in self._lists:
            self._lists[topk] = knn_lists(self.layers, topk)
        return self._lists[topk]


def _raw_scores(metric: str, xs: list[Tensor], ys: list[Tensor], kwargs: dict) -> Tensor:
    info = get_metric(metric)
    return torch.tensor([[info(x, y, **kwargs) for y in ys] for x in xs], dtype=torch.float64)


def _best(scores: Tensor, metric: str) -> tuple[int, int]:
    sign = 1.0 if get_metric(metric).higher_is_better else -1.0
    flat = int((sign * scores).flatten().argmax())
    return flat // scores.shape[1], flat % scores.shape[1]


def _mutual_knn(x: Prepared, y: Prepared, settings: AlignSettings) -> tuple[Tensor, list[float]]:
    """Layer-pair scores and max-null statistics of mutual_knn from each layer's k-NN lists (found once)."""
    lists_x, lists_y = x.knn(settings.topk), y.knn(settings.topk)
    scores = mutual_knn_scores(lists_x, lists_y)
    if not settings.n_permutations:
        return scores, [float(scores.max()), *[float("nan")] * 4]
    n = lists_x[0].shape[0]
    perms = _permutations(n, settings.n_permutations, settings.seed, lists_x[0].device)
    null = mutual_knn_max_null(lists_x, lists_y, perms)
    stats = _statistics(float(scores.max()), null, get_metric("mutual_knn"), settings.alpha)
    return scores, [stats[k] for k in ("score", "p_value", "null95", "threshold", "calibrated")]


def _generic(xs: list[Tensor], ys: list[Tensor], metric: str, settings: AlignSettings):
    kwargs = settings.metric_kwargs(metric)
    if not settings.n_permutations:
        scores = _raw_scores(metric, xs, ys, kwargs)
        return scores, [float(scores[_best(scores, metric)]), *[float("nan")] * 4]
    result = permutation_test_max(
        metric, xs, ys, n_permutations=settings.n_permutations, seed=settings.seed, alpha=settings.alpha,
        metric_kwargs=kwargs,
    )  # fmt: skip
    return result.scores, [result.score, result.p_value, result.null95, result.threshold, result.calibrated]


def pair_alignment(
    a: FeatureSet,
    b: FeatureSet,
    metric: str,
    settings: AlignSettings,
    prepared: tuple[list[Tensor] | Prepared, list[Tensor] | Prepared] | None = None,
) -> PairAlignment:
    """Score ``metric`` at every layer pair of ``a`` and ``b``; calibrate the best against the max-null.

    ``prepared``: the two sides already passed through :func:`prepare` (saves repeating it per pair).
    mutual_knn takes a fast path (each layer's k-NN lists once; the same numbers as
    ``permutation_test_max``); other metrics go through ``permutation_test_max``.
    """
    if a.n != b.n:
        raise ValueError(f"{a.name} has {a.n} samples and {b.name} {b.n}: feature sets must share samples")
    check_samples(a.n, replace(settings, metrics=(metric,)), f"{a.name} vs {b.name}")
    sides = prepared or (prepare(a, settings), prepare(b, settings))
    x, y = (s if isinstance(s, Prepared) else Prepared(s) for s in sides)
    if metric == "mutual_knn":
        scores, stats = _mutual_knn(x, y, settings)
    else:
        scores, stats = _generic(x.layers, y.layers, metric, settings)
    best = _best(scores, metric)
    return PairAlignment(
        a.name, b.name, metric, scores, best, (a.layers[best[0]], b.layers[best[1]]), *stats, n=a.n
    )


@dataclass
class AlignmentResult:
    """Every scored pair of an experiment, by ``(metric, a, b)``."""

    names: list[str]
    settings: AlignSettings
    pairs: dict[tuple[str, str, str], PairAlignment] = field(default_factory=dict)
    modalities: dict[str, str] = field(default_factory=dict)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)

    def matrix(self, metric: str, value: str = "score") -> pd.DataFrame:
        """N x N DataFrame of ``value`` (rows: a, columns: b); NaN where a pair was not scored."""
        if value not in VALUES:
            raise ValueError(f"value must be one of {VALUES}, got {value!r}")
        out = pd.DataFrame(np.nan, index=self.names, columns=self.names)
        for (m, a, b), pair in self.pairs.items():
            if m == metric:
                out.loc[a, b] = getattr(pair, value)
        return out

    def table(self) -> pd.DataFrame:
        """One row per scored (metric, a, b)."""
        return pd.DataFrame([p.row() for p in self.pairs.values()])

    def layer_table(self) -> pd.DataFrame:
        """One row per (metric, a, b, layer of a, layer of b) with its raw score."""
        rows = []
        for pair, la, lb in self._layer_names():
            for i, name_a in enumerate(la):
                for j, name_b in enumerate(lb):
                    rows.append({"metric": pair.metric, "a": pair.a, "b": pair.b, "layer_a": name_a,
                                 "layer_b": name_b, "score": float(pair.scores[i, j])})  # fmt: skip
        return pd.DataFrame(rows)

    def _layer_names(self):
        for pair in self.pairs.values():
            yield pair, self.info[pair.a]["layers"], self.info[pair.b]["layers"]


def _pairs(sets: Sequence[FeatureSet], metric: str, mode: PairMode) -> list[tuple[int, int]]:
    out = []
    for i, a in enumerate(sets):
        for j, b in enumerate(sets):
            if i == j or (metric in SYMMETRIC and j < i):
                continue
            if mode == "cross_modal" and (a.modality == b.modality or a.modality != "vision"):
                continue
            out.append((i, j))
    return out


def check_sets(sets: Sequence[FeatureSet], settings: AlignSettings) -> None:
    """Unique names, one n for all, k < n, and for ``cross_modal`` both modalities present."""
    names = [s.name for s in sets]
    if len(sets) < 2 or len(set(names)) != len(names):
        raise ValueError(f"alignment needs at least two feature sets with distinct names, got {names}")
    counts = {s.name: s.n for s in sets}
    if len(set(counts.values())) != 1:
        raise ValueError(f"every feature set must hold the same samples, got sample counts {counts}")
    check_samples(sets[0].n, settings)
    if settings.pairs == "cross_modal" and {s.modality for s in sets} != {"vision", "text"}:
        raise ValueError("pairs='cross_modal' needs both vision and text feature sets")


def informative(fs: FeatureSet) -> FeatureSet:
    """``fs`` without its layers whose rows all point one way (e.g. a ViT's class token before the first
    block: the same for every image), which no metric can score; warns naming them."""
    keep = []
    for feats in fs.features:
        unit = torch.nn.functional.normalize(feats.double(), dim=1)
        keep.append(bool((unit - unit.mean(0)).norm() > 1e-6 * unit.norm()))
    if all(keep):
        return fs
    dropped = [n for n, k in zip(fs.layers, keep, strict=True) if not k]
    if not any(keep):
        raise ValueError(f"{fs.name}: every layer is constant across samples ({dropped}); nothing to align")
    warnings.warn(f"{fs.name}: layers {dropped} are the same for every sample; left out", stacklevel=2)
    layers = [(n, f) for n, f, k in zip(fs.layers, fs.features, keep, strict=True) if k]
    info = {**fs.info, "constant_layers": dropped}
    return FeatureSet(fs.name, fs.modality, [n for n, _ in layers], [f for _, f in layers], info)


def alignment_matrices(sets: Sequence[FeatureSet], settings: AlignSettings) -> AlignmentResult:
    """Score every pair of ``sets`` (each unordered pair once for symmetric metrics) with every metric.

    Layers that are the same for every sample are left out first (:func:`informative`)."""
    check_sets(sets, settings)
    sets = [informative(s) for s in sets]
    prepared = [Prepared(prepare(s, settings)) for s in sets]
    result = AlignmentResult(
        [s.name for s in sets],
        settings,
        modalities={s.name: s.modality for s in sets},
        info={s.name: {**s.info, "layers": list(s.layers)} for s in sets},
    )
    for metric in settings.metrics:
        for i, j in _pairs(sets, metric, settings.pairs):
            pair = pair_alignment(sets[i], sets[j], metric, settings, (prepared[i], prepared[j]))
            result.pairs[(metric, sets[i].name, sets[j].name)] = pair
    return result


def symmetric(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill each unscored (b, a) entry with (a, b): symmetric metrics are scored once per pair."""
    return frame.combine_first(frame.T)


def sweep(
    sets: Sequence[FeatureSet],
    settings: AlignSettings,
    ks: Sequence[int] = (),
    ns: Sequence[int] = (),
    repeats: int = 1,
) -> pd.DataFrame:
    """Best-layer alignment of every pair for each k (k-NN metrics) and each sample count n.

    Each n draws ``repeats`` random subsets of the samples (seeded, the same rows for every set) and runs
    the protocol on them as if they were the whole data set; a k that is not below n is skipped at that n.
    Returns one row per (metric, k, n, repeat, a, b) with the score, calibrated score and p-value.
    """
    check_sets(sets, settings)
    full = sets[0].n
    ns = sorted(set(ns or [full]))
    if max(ns) > full or min(ns) < 2:
        raise ValueError(f"sweep: every n must be in [2, {full}] (the samples available), got {list(ns)}")
    ks = sorted(set(ks or [settings.topk]))
    if min(ks) < 1 or min(ks) >= max(ns):
        raise ValueError(f"sweep: k-NN metrics need 1 <= k < n; got ks {ks} and at most n = {max(ns)}")
    generator = torch.Generator().manual_seed(settings.seed)
    rows = []
    for n in ns:
        for repeat in range(repeats if n < full else 1):
            index = torch.randperm(full, generator=generator)[:n].sort().values
            subset = [s.rows(index) for s in sets]
            for metric in settings.metrics:
                for k in [k for k in ks if k < n] if takes_topk(metric) else [settings.topk]:
                    local = replace(settings, metrics=(metric,), topk=k)
                    for pair in alignment_matrices(subset, local).pairs.values():
                        k_value = k if takes_topk(metric) else None
                        rows.append({**pair.row(), "k": k_value, "repeat": repeat})
    return pd.DataFrame(rows)


def write_alignment(
    outdir: str | Path, result: AlignmentResult, order: Sequence[str] | None = None, layer_plots: bool = True
) -> list[Path]:
    """Write per metric ``<metric>_{score,calibrated,p_value}.csv`` and ``<metric>.png`` (raw and calibrated
    heatmaps, rows/columns in ``order``), ``pairs.csv``, ``layers.csv`` and (``layer_plots``) one
    layer-by-layer heatmap per pair under ``layers/<metric>/``. Returns the paths written."""
    from stitching.prh.align_plots import plot_layer_scores, plot_matrices

    out = Path(outdir)
    order = list(order or result.names)
    missing = sorted(set(result.names) - set(order))
    if missing:
        raise ValueError(f"order must name every model; missing {missing}")
    rows, cols = _axes(result, order)
    written = []
    for metric in result.settings.metrics:
        frames = {}
        for value in ("score", "calibrated", "p_value"):
            frame = result.matrix(metric, value)
            frame = symmetric(frame) if metric in SYMMETRIC else frame
            frames[value] = frame.loc[rows, cols]
            written.append(
                atomic_write(out / f"{metric}_{value}.csv", frames[value].to_csv(float_format="%.6g"))
            )
        written.append(plot_matrices(out / f"{metric}.png", metric, frames, _settings_line(result)))
    written.append(atomic_write(out / "pairs.csv", result.table().to_csv(index=False, float_format="%.6g")))
    layers = result.layer_table()
    written.append(atomic_write(out / "layers.csv", layers.to_csv(index=False, float_format="%.6g")))
    for pair, la, lb in result._layer_names() if layer_plots else []:
        path = out / "layers" / pair.metric / f"{pair.a}__{pair.b}.png"
        written.append(plot_layer_scores(path, pair.scores.numpy(), la, lb, pair.best_pair, _title(pair)))
    return written


def _axes(result: AlignmentResult, order: list[str]) -> tuple[list[str], list[str]]:
    """Rows and columns of the heatmaps: vision x text for cross-modal results, else all x all."""
    if result.settings.pairs == "cross_modal":
        vision = [n for n in order if result.modalities.get(n) == "vision"]
        return vision, [n for n in order if result.modalities.get(n) == "text"]
    return order, order


def _title(pair: PairAlignment) -> str:
    return (
        f"{pair.a} x {pair.b}, {pair.metric}: best {pair.best_layers[0]} x {pair.best_layers[1]} = "
        f"{pair.score:.3f} (p = {pair.p_value:.3g}, calibrated {pair.calibrated:.3f})"
    )


def _settings_line(result: AlignmentResult) -> str:
    s = result.settings
    n = next(iter(result.pairs.values())).n if result.pairs else 0
    protocol = "PRH protocol (clip 0.95, L2 rows)" if s.prh_protocol else "raw features"
    return f"n = {n}, k = {s.topk}, {protocol}, best layer pair; {s.n_permutations} permutations (max-null)"
