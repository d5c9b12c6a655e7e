"""Streaming closed-form ridge regression (float64 normal equations) and reduced-rank regression.

Rows are samples: for activations, every spatial position / token of every image is one row. Only sums
are kept (count, sum x, sum y, X^T X, X^T Y, per-output sum y^2), so any number of batches fits in
O(D^2 + D K) memory, batches and workers combine exactly (``merge``, ``sync_``), and the solution equals
the single-batch one up to float64 rounding; never an average of per-batch solutions.

Ridge strength is *relative*: ``alpha`` is scaled by the mean eigenvalue of the (centred) input scatter,
lambda = alpha * trace(Xc^T Xc) / D, so one ``alpha`` suits layers of any scale, width and sample count.
The equivalent scikit-learn model is ``Ridge(alpha=lambda)`` (intercept not penalised).
"""

from __future__ import annotations

import torch

_F64 = torch.float64


class RidgeRegression:
    """Accumulate ``y ~ x @ weight.T + bias`` over batches, then solve ridge regression in closed form."""

    _STATES = ("count", "sum_x", "sum_y", "xtx", "xty", "sum_yy")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        fit_intercept: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        self.in_features, self.out_features, self.fit_intercept = in_features, out_features, fit_intercept
        d, k = in_features, out_features
        kw = dict(dtype=_F64, device=device)
        self.count = torch.zeros((), **kw)
        self.sum_x, self.sum_y, self.sum_yy = torch.zeros(d, **kw), torch.zeros(k, **kw), torch.zeros(k, **kw)
        self.xtx, self.xty = torch.zeros(d, d, **kw), torch.zeros(d, k, **kw)

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor) -> RidgeRegression:
        """Add samples ``x`` (n, in_features) and targets ``y`` (n, out_features)."""
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"expected x (n, D) and y (n, K) with the same n, got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        if x.shape[1] != self.in_features or y.shape[1] != self.out_features:
            raise ValueError(
                f"expected {self.in_features} input and {self.out_features} output features, "
                f"got x {tuple(x.shape)} and y {tuple(y.shape)}"
            )
        x, y = x.to(self.xtx.device, _F64), y.to(self.xtx.device, _F64)
        self.count += x.shape[0]
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.sum_yy += y.square().sum(0)
        self.xtx += x.T @ x
        self.xty += x.T @ y
        return self

    def merge(self, other: RidgeRegression) -> RidgeRegression:
        """Add another accumulator's samples to this one (same feature sizes)."""
        if (other.in_features, other.out_features) != (self.in_features, self.out_features):
            raise ValueError("cannot merge RidgeRegression accumulators of different feature sizes")
        for name in self._STATES:
            getattr(self, name).add_(getattr(other, name).to(self.xtx.device))
        return self

    def sync_(self) -> RidgeRegression:
        """Sum the states over all torch.distributed processes (a no-op when not distributed)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for name in self._STATES:
                torch.distributed.all_reduce(getattr(self, name))
        return self

    @property
    def mean_x(self) -> torch.Tensor:
        return self.sum_x / self._n()

    @property
    def mean_y(self) -> torch.Tensor:
        return self.sum_y / self._n()

    @property
    def cov_x(self) -> torch.Tensor:
        """Population covariance of x (divided by n), from the sums."""
        return self.xtx / self._n() - torch.outer(self.mean_x, self.mean_x)

    def _n(self) -> torch.Tensor:
        if self.count <= 0:
            raise ValueError("RidgeRegression has no samples: call update(x, y) first")
        return self.count

    def _scatter(self) -> tuple[torch.Tensor, torch.Tensor]:
        """X^T X and X^T Y, centred on the means when fitting an intercept."""
        n = self._n()
        if not self.fit_intercept:
            return self.xtx, self.xty
        return self.xtx - torch.outer(self.sum_x, self.sum_x) / n, self.xty - torch.outer(
            self.sum_x, self.sum_y
        ) / n

    def penalty(self, alpha: float) -> float:
        """The absolute ridge lambda for a relative ``alpha`` (scikit-learn's ``Ridge(alpha=...)``)."""
        trace = self._scatter()[0].trace().item()
        return alpha * (trace / self.in_features if trace > 0 else 1.0)

    def solve(self, alpha: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
        """Float64 CPU ``(weight (K, D), bias (K,))`` minimising ||y - xW^T - b||^2 + lambda ||W||^2."""
        sxx, sxy = (s.cpu() for s in self._scatter())
        a = sxx + self.penalty(alpha) * torch.eye(self.in_features, dtype=_F64)
        try:
            coef = torch.linalg.solve(a, sxy)
        except torch.linalg.LinAlgError:  # singular only when alpha == 0: take the minimum-norm solution
            coef = torch.linalg.pinv(a, hermitian=True) @ sxy
        weight = coef.T.contiguous()
        bias = (
            self.mean_y.cpu() - weight @ self.mean_x.cpu()
            if self.fit_intercept
            else torch.zeros(len(weight), dtype=_F64)
        )
        return weight, bias

    def solve_reduced_rank(self, alpha: float, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reduced-rank ridge regression: ``(down (r, D), up (K, r), bias (K,))``, y ~ up @ down @ x + bias.

        The ridge solution's fitted values are projected onto their top-``rank`` principal directions V
        (eigenvectors of W Cov(x) W^T): down = V^T W, up = V. For alpha = 0 this is the classical
        reduced-rank regression (the best rank-r linear map in squared error); it beats a truncated SVD of
        W whenever the inputs are correlated.
        """
        if not 1 <= rank <= min(self.in_features, self.out_features):
            raise ValueError(f"rank must be in [1, {min(self.in_features, self.out_features)}], got {rank}")
        weight, bias = self.solve(alpha)
        if self.fit_intercept:
            mean, moment = self.mean_x.cpu(), self.cov_x.cpu()
        else:  # no intercept: second moments about zero, and the bias stays zero
            mean, moment = torch.zeros(self.in_features, dtype=_F64), (self.xtx / self._n()).cpu()
        _, vecs = torch.linalg.eigh(weight @ moment @ weight.T)
        up = vecs[:, -rank:].flip(1)  # eigh sorts ascending; keep the top directions, largest first
        down = up.T @ weight
        # Keep the fitted mean: y_r = V V^T W (x - mean) + (W mean + b).
        return down, up, bias + (weight - up @ down) @ mean

    def r2(self, weight: torch.Tensor, bias: torch.Tensor) -> float:
        """R^2 of ``(weight, bias)`` on the accumulated data, averaged over outputs (as scikit-learn)."""
        w, b = weight.to(self.xtx.device, _F64), bias.to(self.xtx.device, _F64)
        n = self._n()
        # sum_i (y_ik - w_k.x_i - b_k)^2 expanded into the accumulated sums.
        rss = (
            self.sum_yy
            - 2 * (w * self.xty.T).sum(1)
            - 2 * b * self.sum_y
            + ((w @ self.xtx) * w).sum(1)
            + 2 * b * (w @ self.sum_x)
            + n * b.square()
        )
        tss = self.sum_yy - self.sum_y.square() / n
        return (1 - rss / tss).mean().item()

    def affine_input(self, shift: torch.Tensor, scale: torch.Tensor) -> RidgeRegression:
        """The accumulator ``update`` would give on inputs ``(x - shift) / scale`` (exact, per feature)."""
        out = RidgeRegression(self.in_features, self.out_features, fit_intercept=self.fit_intercept)
        dev = self.xtx.device
        shift, inv = shift.to(dev, _F64), 1.0 / scale.to(dev, _F64)
        out.count, out.sum_y, out.sum_yy = self.count.clone(), self.sum_y.clone(), self.sum_yy.clone()
        out.sum_x = (self.sum_x - self.count * shift) * inv
        centred = self.xtx - torch.outer(shift, self.sum_x) - torch.outer(self.sum_x, shift)
        out.xtx = (centred + self.count * torch.outer(shift, shift)) * torch.outer(inv, inv)
        out.xty = (self.xty - torch.outer(shift, self.sum_y)) * inv[:, None]
        return out
