"""Reduce feature maps and token sequences to one (N, D) vector per sample before measuring alignment."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

ReductionRule = Literal["flatten", "mean", "cls"]
REDUCTION_RULES: tuple[str, ...] = ("flatten", "mean", "cls")


def reduce_activation(x: Tensor, rule: ReductionRule = "mean", num_prefix_tokens: int = 0) -> Tensor:
    """Turn a batched activation into an (N, D) matrix, one row per sample.

    Accepted inputs: a feature map ``(N, C, H, W)``, a token sequence ``(N, L, D)`` whose first
    ``num_prefix_tokens`` tokens are class/register tokens, or an already reduced ``(N, D)`` matrix (returned
    unchanged whatever the rule).

    Rules:
        ``"flatten"``: every spatial position, ``(N, C*H*W)`` for a feature map and ``(N, (L-p)*D)`` for
            tokens; prefix tokens are dropped so a ViT and a CNN with the same grid cover the same positions.
            The feature order differs (channel-major vs position-major), which no metric here depends on.
        ``"mean"``: average over spatial positions / patch tokens (prefix tokens excluded), giving ``(N, C)``
            or ``(N, D)``.
        ``"cls"``: the first prefix token ``(N, D)``; needs ``num_prefix_tokens >= 1``.
    """
    if rule not in REDUCTION_RULES:
        raise ValueError(f"unknown reduction rule {rule!r}; choose one of {list(REDUCTION_RULES)}")
    if x.ndim == 2:
        return x
    if x.ndim == 4:
        if rule == "cls":
            raise ValueError(
                "rule='cls' needs a token sequence with a class token; a feature map (N, C, H, W) has none: "
                "use rule='mean' or 'flatten'"
            )
        return x.flatten(1) if rule == "flatten" else x.mean(dim=(2, 3))
    if x.ndim == 3:
        p = num_prefix_tokens
        if not 0 <= p <= x.shape[1]:
            raise ValueError(f"num_prefix_tokens={p} is out of range for {x.shape[1]} tokens")
        if rule == "cls":
            if p < 1:
                raise ValueError("rule='cls' needs num_prefix_tokens >= 1 (the class token is token 0)")
            return x[:, 0]
        patches = x[:, p:]
        if patches.shape[1] == 0:
            raise ValueError(f"no patch tokens left after dropping {p} prefix tokens; use rule='cls'")
        return patches.flatten(1) if rule == "flatten" else patches.mean(dim=1)
    raise ValueError(f"expected (N, D), (N, C, H, W) or (N, L, D) activations, got shape {tuple(x.shape)}")
