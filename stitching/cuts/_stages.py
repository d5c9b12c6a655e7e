"""Building blocks for splitters: method-call stages, block lists, and the front/back segments."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from stitching.cuts._registry import Stage


class Call(nn.Module):
    """A stage that runs a model method (``_pos_embed``, ``forward_head``, ...).

    The modules and parameters the method reads are registered on this wrapper (the same objects, no copies)
    so that ``front.parameters()`` / ``back.parameters()`` and ``.eval()`` reach them.
    """

    def __init__(
        self, fn: Callable[[torch.Tensor], torch.Tensor], owned: dict[str, nn.Module | nn.Parameter]
    ):
        super().__init__()
        self.fn = fn
        for name, obj in owned.items():
            if isinstance(obj, nn.Parameter):
                self.register_parameter(name, obj)
            elif isinstance(obj, nn.Module):
                self.add_module(name, obj)

    def train(self, mode: bool = True) -> Call:
        # Some methods read the model's own flag (ResNet's head dropout uses `self.training`).
        super().train(mode)
        owner = getattr(self.fn, "__self__", None)
        if isinstance(owner, nn.Module):
            owner.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


class Segment(nn.Sequential):
    """A run of consecutive stages; ``stage_names`` are their module paths."""

    def __init__(self, stages: Sequence[Stage]):
        super().__init__(*(s.module for s in stages))
        self.stage_names = tuple(s.name for s in stages)


def blocks(prefix: str, container: nn.Module) -> list[Stage]:
    """One stage per child of ``container``; the last is named after the container (the coarsest name)."""
    children = list(container.named_children())
    return [
        Stage(prefix if i == len(children) - 1 else f"{prefix}.{name}", child)
        for i, (name, child) in enumerate(children)
    ]


def stem(model: nn.Module, names: Iterable[str]) -> Stage:
    """The stem as one stage, named after its last module that is not an ``nn.Identity``."""
    names = [n for n in names if getattr(model, n, None) is not None]
    modules = [getattr(model, n) for n in names]
    real = [n for n, m in zip(names, modules, strict=True) if not isinstance(m, nn.Identity)]
    return Stage(real[-1] if real else names[-1], nn.Sequential(*modules))


def head(model: nn.Module, used: Sequence[Stage], method: str = "forward_head") -> Stage:
    """The head method as a (non-cut) stage that owns every top-level child and parameter not used yet."""
    taken = {id(p) for s in used for p in s.module.parameters()}
    taken |= {id(m) for s in used for m in s.module.modules()}
    owned: dict[str, nn.Module | nn.Parameter] = {}
    for name, child in model.named_children():
        if not any(id(m) in taken for m in child.modules()):  # containers of used blocks are not the head's
            owned[name] = child
    for name, param in model.named_parameters(recurse=False):
        if id(param) not in taken:
            owned[name] = param
    return Stage("head", Call(getattr(model, method), owned), cut=False)


def overrides(model: nn.Module, base: type, *methods: str) -> bool:
    """Whether ``type(model)`` overrides any of ``methods`` of ``base`` (then its splitter may not apply)."""
    return any(getattr(type(model), m) is not getattr(base, m) for m in methods)
