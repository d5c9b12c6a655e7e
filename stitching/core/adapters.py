"""Building a cell's adapter: the same seed, structure and least-squares fit on every path."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from lightning.pytorch.utilities.seed import isolate_rng

from stitching.adapters import Adapter, AdapterConfig, create_adapter
from stitching.cuts import ActivationSpec


def build_adapter(
    source: ActivationSpec,
    target: ActivationSpec,
    config: AdapterConfig,
    init: str,
    seed: int,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Adapter:
    """An adapter from ``source`` to ``target`` initialised by ``init``, its random parts drawn from
    ``seed`` alone (the global RNG is left as it was).

    ``data``: (source, target) activation batches of the clean training split; ``lstsq`` fits on them.
    """
    if init == "lstsq" and data is None:
        raise ValueError("init='lstsq' needs data: (source, target) activation batches of the training split")
    with isolate_rng():
        torch.manual_seed(seed)
        return create_adapter(source, target, config, init=init, data=data if init == "lstsq" else None)
