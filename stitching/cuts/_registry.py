"""Splitter registry: one decorated function per model family turns a model into an ordered list of stages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Stage:
    """One piece of a model's forward path; running all stages in order is ``model(x)``.

    ``name`` is the module path after which a cut falls; ``cut`` says whether a cut after this stage is
    offered (stem internals, final norms and heads are stages but not cut points).
    """

    name: str
    module: nn.Module
    cut: bool = True


StageFn = Callable[[nn.Module], list[Stage]]


@dataclass(frozen=True)
class Splitter:
    """A registered family: ``matches(model)`` selects it, ``stages(model)`` slices the model."""

    name: str
    matches: Callable[[nn.Module], bool]
    stages: StageFn


_SPLITTERS: dict[str, Splitter] = {}


def register_splitter(name: str, matches: Callable[[nn.Module], bool]) -> Callable[[StageFn], StageFn]:
    """Register ``fn(model) -> list[Stage]`` as the splitter of the family ``name``.

    The first stage must be the stem: the cut after it has depth 0.
    """

    def decorator(fn: StageFn) -> StageFn:
        if name in _SPLITTERS:
            raise ValueError(f"a splitter named {name!r} is already registered ({_SPLITTERS[name].stages})")
        _SPLITTERS[name] = Splitter(name, matches, fn)
        return fn

    return decorator


def find_splitter(model: nn.Module) -> Splitter | None:
    """The first registered splitter whose ``matches`` accepts ``model``, or None."""
    return next((s for s in _SPLITTERS.values() if s.matches(model)), None)


def list_families() -> list[str]:
    """Names of the model families with a dedicated splitter."""
    return list(_SPLITTERS)
