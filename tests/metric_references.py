"""Independent NumPy references for the alignment metrics (float64, written from the papers), and the
correlated data they are compared on; shared by the metric test modules."""

import numpy as np
import scipy.linalg
import scipy.stats
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.neighbors import NearestNeighbors


def np_hsic_biased(k, l_):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n  # explicit centring matrix
    return np.trace(k @ h @ l_ @ h) / (n - 1) ** 2


def np_linear_cka(x, y):
    k, l_ = x @ x.T, y @ y.T  # uncentred Gram matrices: the centring matrix does the work
    return np_hsic_biased(k, l_) / np.sqrt(np_hsic_biased(k, k) * np_hsic_biased(l_, l_))


def np_hsic_unbiased(k, l_):
    """Song et al. 2012, eq. 5, written from the paper on raw (uncentred) Gram matrices."""
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l_ - np.diag(np.diag(l_))
    one = np.ones(n)
    value = np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    value -= 2 / (n - 2) * one @ kt @ lt @ one
    return value / (n * (n - 3))


def np_debiased_cka(x, y):
    k, l_ = x @ x.T, y @ y.T
    return np_hsic_unbiased(k, l_) / np.sqrt(np_hsic_unbiased(k, k) * np_hsic_unbiased(l_, l_))


def np_procrustes(x, y):
    a, b = x - x.mean(0), y - y.mean(0)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    d = max(a.shape[1], b.shape[1])  # zero-pad the narrower side
    a = np.pad(a, ((0, 0), (0, d - a.shape[1])))
    b = np.pad(b, ((0, 0), (0, d - b.shape[1])))
    r, _ = scipy.linalg.orthogonal_procrustes(a, b)
    return 1 - np.linalg.norm(a @ r - b) ** 2 / 2  # ||aR - b||^2 = 2 - 2 <aR, b> for unit norms


def np_svcca(x, y, keep):
    def reduce(z):
        z = z - z.mean(0)
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        if isinstance(keep, float):
            k = int(np.argmax(np.cumsum(s**2) / np.sum(s**2) >= keep)) + 1
        else:
            k = keep
        return z @ vt[:k].T  # principal component scores

    a, b = reduce(x), reduce(y)

    def inv_sqrt(c):
        w, v = np.linalg.eigh(c)
        return v @ np.diag(w**-0.5) @ v.T

    n = a.shape[0]
    saa, sbb, sab = a.T @ a / (n - 1), b.T @ b / (n - 1), a.T @ b / (n - 1)
    return np.linalg.svd(inv_sqrt(saa) @ sab @ inv_sqrt(sbb), compute_uv=False).mean()


def np_ridge_r2(x, y, alpha):
    lam = alpha * np.sum((x - x.mean(0)) ** 2) / x.shape[1]
    pred = Ridge(alpha=lam, fit_intercept=True).fit(x, y).predict(x)
    return r2_score(y, pred, multioutput="variance_weighted")


def np_mutual_knn(x, y, topk):
    def knn(z):
        _, idx = NearestNeighbors(n_neighbors=topk + 1, metric="cosine").fit(z).kneighbors(z)
        return idx[:, 1:]  # column 0 is the sample itself

    a, b = knn(x), knn(y)
    return np.mean([len(set(a[i]) & set(b[i])) for i in range(len(a))]) / topk


# ---------------------------------------------------------------- data


def paired(n, dx, dy, seed=0, noise=0.5):
    """Correlated pair: y is a random linear map of x plus noise, with a non-zero mean on both sides."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dx)) @ rng.standard_normal((dx, dx)) + 3.0
    y = x @ rng.standard_normal((dx, dy)) + noise * rng.standard_normal((n, dy)) * x.std() - 1.0
    return torch.from_numpy(x), torch.from_numpy(y)
