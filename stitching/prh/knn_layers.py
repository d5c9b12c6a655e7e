"""Mutual k-NN at every layer pair of two models, and its max-over-layer-pairs permutation null, fast.

The registry's path (``permutation_test_max`` over ``mutual_knn``) finds both sides' neighbours again for
every layer pair and again for the null: 4 x Lx x Ly neighbour searches. Here each layer's k-NN lists are
found once (:func:`stitching.metrics.functional.nearest_neighbours`, the metric's own search, so scores are
identical), the observed overlaps come from the lists, and each permutation's overlap is a gather in a
boolean adjacency matrix. Same permutations (seeded alike) and the same statistics as
``permutation_test_max``; tests check that both give the same numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stitching.metrics.functional import nearest_neighbours

_DENSE_LIMIT = 4096
"""Up to this many samples each layer's k-NN relation is a dense n x n boolean matrix (16 MB at the limit);
beyond, membership is looked up in sorted keys (O(n k) memory)."""
_CHUNK = 2**24


def knn_lists(layers: list[Tensor], topk: int) -> list[Tensor]:
    """``(N, k)`` neighbour indices of every layer (self excluded, rows L2-normalised)."""
    return [nearest_neighbours(x, topk)[1] for x in layers]


class _Relation:
    """Membership test ``j in knn(i)`` for one layer's lists."""

    def __init__(self, lists: Tensor) -> None:
        n, k = lists.shape
        self.n = n
        rows = torch.arange(n, device=lists.device).unsqueeze(1).expand(n, k)
        if n <= _DENSE_LIMIT:
            self.dense = torch.zeros(n, n, dtype=torch.bool, device=lists.device)
            self.dense[rows, lists] = True
        else:
            self.dense = None
            self.keys = (rows * n + lists).flatten().sort().values

    def count(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Per leading index, how many ``(rows, cols)`` pairs are in the relation (summed over the rest)."""
        if self.dense is not None:
            return self.dense[rows, cols].flatten(1).sum(1)
        query = rows * self.n + cols
        pos = torch.searchsorted(self.keys, query.flatten()).clamp_max(self.keys.numel() - 1)
        return (self.keys[pos] == query.flatten()).view(query.shape[0], -1).sum(1)


def mutual_knn_scores(lists_x: list[Tensor], lists_y: list[Tensor]) -> Tensor:
    """``(Lx, Ly)`` mutual k-NN of every layer pair from the lists (float64)."""
    n, k = lists_x[0].shape
    out = torch.empty(len(lists_x), len(lists_y), dtype=torch.float64)
    for i, ix in enumerate(lists_x):
        for j, iy in enumerate(lists_y):
            out[i, j] = float((ix.unsqueeze(2) == iy.unsqueeze(1)).sum()) / (n * k)
    return out


def mutual_knn_max_null(lists_x: list[Tensor], lists_y: list[Tensor], perms: Tensor) -> Tensor:
    """``(K,)``: for each permutation of y's rows, the best mutual k-NN over all layer pairs (float64)."""
    n, k = lists_x[0].shape
    relations = [_Relation(ix) for ix in lists_x]
    best = torch.full((perms.shape[0],), -torch.inf, dtype=torch.float64)
    start = 0
    for chunk in perms.split(max(1, _CHUNK // (n * k))):
        inverse = chunk.argsort(1)
        rows = torch.arange(n, device=chunk.device).view(1, n, 1).expand(chunk.shape[0], n, k)
        for iy in lists_y:
            # y's lists after permuting its rows: row r is old row c[r], neighbours relabelled by c^-1
            relabelled = inverse.gather(1, iy[chunk].flatten(1)).view(-1, n, k)
            for relation in relations:
                value = relation.count(rows, relabelled).double().cpu() / (n * k)
                part = best[start : start + chunk.shape[0]]
                best[start : start + chunk.shape[0]] = torch.maximum(part, value)
        start += chunk.shape[0]
    return best
