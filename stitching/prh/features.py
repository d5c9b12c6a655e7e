"""Features of many models on the same samples: every cut of a vision model, every text model hidden state.

A :class:`FeatureSet` is one model's features, one ``(N, D)`` tensor per layer, rows in the same sample order
as every other set of the experiment. Vision features come from one forward pass through the model's stages
(``stitching.cuts.model_stages``), reduced per cut with ``reduce_activation`` (spatial / patch-token mean,
flatten, or the class token); text features are the pooled hidden states of ``stitching.prh.text``. Either
can be cached in an :class:`~stitching.bench.cache.ActivationCache` (one entry per model: the layers side
by side), so a re-run with ``persist=True`` reads them back instead of running the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from stitching.bench.cache import ActivationCache, cache_key
from stitching.cuts import list_cuts, model_stages
from stitching.metrics.functional import reduce_activation

Modality = Literal["vision", "text"]
VISION_REDUCTIONS = ("mean", "flatten", "cls")


@dataclass
class FeatureSet:
    """One model's features: ``features[i]`` is the ``(N, D_i)`` matrix of layer ``layers[i]``."""

    name: str
    modality: Modality
    layers: list[str]
    features: list[Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    """Anything known of the model: competence, family, seed, accuracy, number of parameters..."""

    def __post_init__(self) -> None:
        if self.modality not in ("vision", "text"):
            raise ValueError(
                f"FeatureSet {self.name!r}: modality must be 'vision' or 'text', got {self.modality!r}"
            )
        if not self.features or len(self.layers) != len(self.features):
            raise ValueError(
                f"FeatureSet {self.name!r}: needs one feature matrix per layer, got {len(self.layers)} layer "
                f"names and {len(self.features)} matrices"
            )
        rows = {int(f.shape[0]) for f in self.features}
        if any(f.ndim != 2 for f in self.features) or len(rows) != 1:
            shapes = [tuple(f.shape) for f in self.features]
            raise ValueError(f"FeatureSet {self.name!r}: every layer must be (N, D) with one N, got {shapes}")

    @property
    def n(self) -> int:
        """Number of samples (rows)."""
        return int(self.features[0].shape[0])

    def rows(self, index: Tensor | slice) -> FeatureSet:
        """The same set restricted to some samples (e.g. a random subset of size n for a sweep)."""
        return FeatureSet(self.name, self.modality, self.layers, [f[index] for f in self.features], self.info)


def check_vision_model(name: str, model: nn.Module) -> None:
    """A clear error if ``model`` is a Hugging Face text model rather than an image model."""
    if getattr(model, "config", None) is not None and hasattr(model, "get_input_embeddings"):
        raise TypeError(
            f"model {name!r} is a Hugging Face transformers model ({type(model).__name__}), not an image "
            "model: list it under the suite's text models (or use text_feature_set)"
        )


def _batches(images: Tensor | DataLoader, batch_size: int) -> Iterable[Tensor]:
    """Image batches from a tensor or from a loader of ``images`` or ``(images, labels, ...)`` tuples."""
    loader = (
        DataLoader(TensorDataset(images), batch_size=batch_size) if isinstance(images, Tensor) else images
    )
    for batch in loader:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def _num_samples(images: Tensor | DataLoader) -> int:
    return len(images) if isinstance(images, Tensor) else len(images.dataset)


def _input_size(images: Tensor | DataLoader) -> tuple[int, ...]:
    first = images[:1] if isinstance(images, Tensor) else next(iter(_batches(images, 1)))
    if first.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W) batches, got shape {tuple(first.shape)}")
    return tuple(first.shape[1:])


def _reduced_dims(cuts: list, reduction: str) -> list[int]:
    if reduction == "flatten":
        return [c.spec.channels * c.spec.num_positions for c in cuts]
    return [c.spec.channels for c in cuts]


@torch.no_grad()
def _vision_batches(model: nn.Module, images, names: list[str], reduction: str, batch_size: int, input_size):
    """Yield ``(B, sum D)`` batches: every chosen cut's reduced activation side by side, one forward pass."""
    stages = model_stages(model, input_size)
    prefix = getattr(model, "num_prefix_tokens", 0)
    device = next(model.parameters()).device
    wanted = set(names)
    last = max(i for i, s in enumerate(stages) if s.name in wanted)
    model.eval()
    for batch in _batches(images, batch_size):
        x, parts = batch.to(device), {}
        for stage in stages[: last + 1]:
            x = stage.module(x)
            if stage.name in wanted and stage.cut:
                parts[stage.name] = reduce_activation(x, reduction, prefix).float().cpu()
        yield torch.cat([parts[n] for n in names], dim=1)


def vision_feature_set(
    name: str,
    model: nn.Module,
    images: Tensor | DataLoader,
    cuts: Sequence[str] | None = None,
    reduction: str = "mean",
    batch_size: int = 256,
    cache: ActivationCache | None = None,
    key: dict[str, Any] | None = None,
) -> FeatureSet:
    """Features of ``images`` at every cut of ``model`` (or the named ``cuts``), one forward pass per batch.

    ``images``: an ``(N, C, H, W)`` tensor or a non-shuffled loader of images (or ``(images, labels)``).
    ``reduction``: ``mean`` (spatial mean of feature maps, mean of patch tokens), ``flatten`` or ``cls``
    (the class token; ViTs only), as :func:`stitching.metrics.reduce_activation`. With a ``cache``, ``key``
    (a JSON-able description of the model and the data, e.g. name, seed, checkpoint, dataset, split) names
    the cached entry; without a key nothing is cached.
    """
    check_vision_model(name, model)
    if reduction not in VISION_REDUCTIONS:
        raise ValueError(f"vision reduction must be one of {VISION_REDUCTIONS}, got {reduction!r}")
    input_size = _input_size(images)
    available = list_cuts(model, input_size)
    chosen = [c for c in available if cuts is None or c.name in cuts]
    unknown = sorted(set(cuts or []) - {c.name for c in available})
    if unknown:
        raise ValueError(f"model {name!r}: unknown cut(s) {unknown}; valid: {[c.name for c in available]}")
    if reduction == "cls" and not getattr(model, "num_prefix_tokens", 0):
        raise ValueError(f"model {name!r} has no class token: use reduction 'mean' or 'flatten'")
    names, dims = [c.name for c in chosen], _reduced_dims(chosen, reduction)

    def compute() -> Iterator[Tensor]:
        return _vision_batches(model, images, names, reduction, batch_size, input_size)

    full = _cached(
        cache, key, dict(cuts=names, reduction=reduction), compute, _num_samples(images), sum(dims)
    )
    return FeatureSet(name, "vision", names, list(full.split(dims, dim=1)), {})


def _cached(cache, key, what: dict[str, Any], compute, n: int, width: int) -> Tensor:
    if cache is None or key is None:
        return torch.cat(list(compute()))
    return cache.get(cache_key(kind="prh_features", **key, **what), compute, n, (width,))


def text_layer_count(name: str, model: nn.Module) -> int:
    """Hidden states the model returns (embeddings plus one per layer), read from its config."""
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None) if config is not None else None
    if config is None or not hasattr(model, "get_input_embeddings"):
        raise TypeError(
            f"model {name!r} ({type(model).__name__}) is not a Hugging Face transformers text model: image "
            "models go under the suite's vision models (or through vision_feature_set)"
        )
    if not isinstance(layers, int):
        raise ValueError(
            f"model {name!r}: its config has no num_hidden_layers, so it has no per-layer hidden states; "
            "use a transformers model that returns output_hidden_states (e.g. via AutoModel)"
        )
    return layers + 1


def text_feature_set(
    name: str,
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    pooling: str = "mean",
    batch_size: int = 64,
    cache: ActivationCache | None = None,
    key: dict[str, Any] | None = None,
) -> FeatureSet:
    """Pooled features of ``texts`` at every hidden state (``hidden_0`` = embeddings, then each layer).

    ``pooling``: ``mean`` (masked mean over tokens) or ``last`` (the last non-padding token). Cached like
    :func:`vision_feature_set`.
    """
    from stitching.prh.text import check_text_inputs, text_features

    count = text_layer_count(name, model)
    check_text_inputs(model, texts, pooling, batch_size)
    width = count * int(model.config.hidden_size)

    def compute() -> Iterator[Tensor]:
        layers = text_features(model, tokenizer, texts, pooling, batch_size)
        if len(layers) != count:
            raise ValueError(f"model {name!r} returned {len(layers)} hidden states, its config says {count}")
        yield torch.cat(layers, dim=1).float()

    full = _cached(cache, key, dict(pooling=pooling), compute, len(texts), width)
    return FeatureSet(name, "text", [f"hidden_{i}" for i in range(count)], list(full.chunk(count, dim=1)), {})
