"""Small module utilities shared by the Lightning modules and the benchmark runner."""

from __future__ import annotations

from torch import nn


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients into ``module``'s parameters; eval mode keeps its BatchNorm statistics fixed."""
    module.requires_grad_(False)
    return module.eval()


def num_parameters(module: nn.Module) -> int:
    """Number of parameter elements in ``module``, frozen or not."""
    return sum(p.numel() for p in module.parameters())


def num_trainable_parameters(module: nn.Module) -> int:
    """Number of parameter elements in ``module`` that receive gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
