"""mutual_knn and cknna give the same values as the Platonic Representation Hypothesis reference code.

The ``prh_*`` functions below transcribe, operation by operation, the reference implementation in
minyoungg/platonic-rep, ``metrics.py`` (commit 07ef02ab7629ad6fe0fce1a02d70144a55b2c537):
``compute_nearest_neighbors``, ``AlignmentMetrics.mutual_knn``, ``hsic_unbiased`` and
``AlignmentMetrics.cknna`` with its defaults ``unbiased=True, distance_agnostic=False``. The reference calls
them on rows that ``measure_alignment.compute_score`` has L2-normalised (``normalize=True`` by default), so
the tests do too.
"""

import pytest
import torch
import torch.nn.functional as torch_f
from metric_references import paired

from stitching.metrics import functional as F


def prh_nearest_neighbors(feats, topk):
    # Self is pushed to the end with -1e8 on the diagonal, then a descending argsort.
    sim = feats @ feats.T
    sim.fill_diagonal_(-1e8)
    return sim.argsort(dim=1, descending=True)[:, :topk]


def prh_mutual_knn(feats_a, feats_b, topk):
    knn_a, knn_b = prh_nearest_neighbors(feats_a, topk), prh_nearest_neighbors(feats_b, topk)
    n = knn_a.shape[0]
    rows = torch.arange(n).unsqueeze(1)
    mask_a, mask_b = torch.zeros(n, n), torch.zeros(n, n)
    mask_a[rows, knn_a] = 1.0
    mask_b[rows, knn_b] = 1.0
    return ((mask_a * mask_b).sum(dim=1) / knn_a.shape[1]).mean().item()


def prh_hsic_unbiased(k, l_):
    # Song et al. 2012, eq. 5; note the transpose in the first term.
    m = k.shape[0]
    k_tilde, l_tilde = k.clone().fill_diagonal_(0), l_.clone().fill_diagonal_(0)
    value = (
        (k_tilde * l_tilde.T).sum()
        + k_tilde.sum() * l_tilde.sum() / ((m - 1) * (m - 2))
        - 2 * (k_tilde @ l_tilde).sum() / (m - 2)
    )
    return value / (m * (m - 3))


def prh_cknna_terms(feats_a, feats_b, topk):
    """The three masked HSICs (kl, kk, ll) of the reference ``cknna``."""
    if topk < 2:
        raise ValueError("CKNNA requires topk >= 2")
    n = feats_a.shape[0]
    k, l_ = feats_a @ feats_a.T, feats_b @ feats_b.T

    def similarity(k, l_):
        k_hat, l_hat = k.clone().fill_diagonal_(float("-inf")), l_.clone().fill_diagonal_(float("-inf"))
        _, top_k = torch.topk(k_hat, topk, dim=1)
        _, top_l = torch.topk(l_hat, topk, dim=1)
        mask = torch.zeros(n, n).scatter_(1, top_k, 1) * torch.zeros(n, n).scatter_(1, top_l, 1)
        return prh_hsic_unbiased(mask * k, mask * l_)

    return similarity(k, l_), similarity(k, k), similarity(l_, l_)


def prh_cknna(feats_a, feats_b, topk):
    sim_kl, sim_kk, sim_ll = prh_cknna_terms(feats_a, feats_b, topk)
    return sim_kl.item() / (torch.sqrt(sim_kk * sim_ll) + 1e-6).item()


def normalised_pair(n, dx, dy, seed, dtype=torch.float64):
    x, y = paired(n, dx, dy, seed=seed, noise=1.5)
    return torch_f.normalize(x.to(dtype), dim=-1), torch_f.normalize(y.to(dtype), dim=-1)


@pytest.mark.parametrize(("seed", "topk"), [(0, 10), (1, 5), (2, 2)])
def test_mutual_knn_matches_reference(seed, topk):
    a, b = normalised_pair(300, 16, 24, seed)
    expected = prh_mutual_knn(a, b, topk)
    assert 0.05 < expected < 0.95  # a non-trivial case
    value = float(F.mutual_knn(a, b, topk=topk, block_size=64))
    # The reference averages float32 masks (about 1e-8 rounding); the shared-neighbour counts are identical.
    assert round(value * 300 * topk) == round(expected * 300 * topk)
    assert value == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("seed", "topk"), [(0, 10), (1, 5), (2, 2)])
def test_cknna_matches_reference(seed, topk):
    a, b = normalised_pair(300, 16, 24, seed)
    # eps=1e-6 is the reference's denominator term; with it, the values agree to float64 rounding.
    expected = prh_cknna(a, b, topk)
    assert float(F.cknna(a, b, topk=topk, eps=1e-6, block_size=64)) == pytest.approx(expected, rel=1e-10)
    # Default eps=0 is the exact ratio of the same three terms.
    kl, kk, ll = prh_cknna_terms(a, b, topk)
    exact = float(kl / torch.sqrt(kk * ll))
    assert float(F.cknna(a, b, topk=topk)) == pytest.approx(exact, rel=1e-10)
    assert exact != pytest.approx(expected, rel=1e-7)  # the reference eps is not negligible here


def test_rows_are_normalised_internally():
    x, y = paired(200, 8, 12, seed=4, noise=1.5)
    a, b = torch_f.normalize(x, dim=-1), torch_f.normalize(y, dim=-1)
    assert float(F.mutual_knn(x * 3.0, y)) == pytest.approx(prh_mutual_knn(a, b, 10), abs=1e-6)
    assert float(F.cknna(x, y, eps=1e-6)) == pytest.approx(prh_cknna(a, b, 10), rel=1e-10)


def test_float32_reference_agrees_to_float32_precision():
    # The reference runs in float32; we run in float64. Same neighbours here, values within float32 error.
    a, b = normalised_pair(300, 16, 24, seed=5, dtype=torch.float32)
    assert float(F.mutual_knn(a, b)) == pytest.approx(prh_mutual_knn(a, b, 10), abs=1e-6)
    assert float(F.cknna(a, b, eps=1e-6)) == pytest.approx(prh_cknna(a, b, 10), rel=1e-4)


def test_reference_quirk_transposed_first_term_matters():
    # The masked kernels are not symmetric, so sum(K * L.T) (reference, ours) != sum(K * L) (a naive port).
    a, b = normalised_pair(120, 8, 12, seed=6)
    n, topk = a.shape[0], 5
    k, l_ = a @ a.T, b @ b.T
    mask = torch.zeros(n, n, dtype=torch.float64)
    _, ia = F.nearest_neighbours(a, topk)
    _, ib = F.nearest_neighbours(b, topk)
    mask.scatter_(1, ia, 1.0)
    mask *= torch.zeros(n, n, dtype=torch.float64).scatter_(1, ib, 1.0)
    mk, ml = mask * k, mask * l_
    assert not torch.equal(mk, mk.T)
    assert float((mk * ml.T).sum()) != pytest.approx(float((mk * ml).sum()), rel=1e-6)
