"""Load local weights (state_dict, torch or Lightning checkpoint) into a model, with clear mismatch errors."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

_STATE_KEYS = ("state_dict", "model", "state_dict_ema")


class CheckpointError(ValueError):
    """A file that cannot be read as a checkpoint (corrupt, not a checkpoint, or refused); names the file."""


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one clear error per way it can fail:
    ``FileNotFoundError`` for a missing file, `CheckpointError` saying "corrupt or not a checkpoint" for
    truncated, empty or foreign bytes, and "not a checkpoint ... refused" for a pickle of arbitrary Python
    objects (never unpickled). ``mmap`` maps a zip-format file instead of reading it (legacy files: read)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not (mmap and "mmap" in str(err)):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # a legacy (non-zip) file
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):  # a class or function by name: code, not data
            raise CheckpointError(
                f"{str(path)!r} is not a checkpoint of weights: it pickles Python objects, which are never "
                "loaded (refused); save a state_dict with torch.save(model.state_dict(), path)"
            ) from None
        raise CheckpointError(f"{str(path)!r} is corrupt or not a checkpoint ({_reason(err)})") from None
    except Exception as err:  # truncated zip, random bytes, text: torch raises anything from EOF to KeyError
        raise CheckpointError(f"{str(path)!r} is corrupt or not a checkpoint ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    first = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:120]
    return f"torch.load: {type(err).__name__}" + (f": {first}" if first else "")


def _state_dict(ckpt: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    if isinstance(ckpt, Mapping):
        for key in _STATE_KEYS:
            if isinstance(ckpt.get(key), Mapping):
                return dict(ckpt[key])
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return dict(ckpt)
    raise CheckpointError(
        f"{str(path)!r} is not a checkpoint of weights: it holds no state_dict (expected a dict of tensors "
        f"or a dict with one of {list(_STATE_KEYS)})"
    )


def _strip_prefix(state: dict[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
    """Keep the keys under the prefix (``""``, ``model.``, ``module.`` ...) that best matches ``wanted``."""
    prefixes = {""}
    for key in state:
        parts = key.split(".")
        prefixes |= {".".join(parts[:i]) + "." for i in range(1, min(len(parts), 4))}

    def strip(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    return max((strip(p) for p in sorted(prefixes)), key=lambda s: len(wanted & set(s)))


def _classifier_keys(model: nn.Module) -> set[str]:
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return {k for k in model.state_dict() if any(k.startswith(n + ".") for n in names)}


def load_checkpoint(
    model: nn.Module, path: str | os.PathLike, model_name: str | None = None, drop_head: bool = False
) -> nn.Module:
    """Load the weights at ``path`` into ``model`` (in place; ``torch.load(weights_only=True)``).

    Raises ``ValueError`` naming both architectures when the checkpoint records another model name (our
    ClassifierModule saves ``hyper_parameters["model_name"]``), else naming the mismatching keys and shapes. A
    classifier of another size fails unless ``drop_head=True``.
    """
    ckpt = read_checkpoint(path)
    saved_name = (ckpt.get("hyper_parameters") or {}).get("model_name") if isinstance(ckpt, Mapping) else None
    if saved_name and model_name and saved_name != model_name:
        raise ValueError(f"{path} holds a {saved_name!r} model, but the model created is {model_name!r}")
    expected = model.state_dict()
    state = _strip_prefix(_state_dict(ckpt, path), set(expected))
    head = _classifier_keys(model)
    if drop_head:
        state = {k: v for k, v in state.items() if k not in head}
    missing = sorted(set(expected) - set(state) - (head if drop_head else set()))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if shapes and set(shapes) <= head:
        k = sorted(shapes)[0]
        raise ValueError(
            f"{path} has a classifier of another size ({k}: {tuple(state[k].shape)} vs the model's "
            f"{tuple(expected[k].shape)}): pass num_classes={state[k].shape[0]} or drop_head=True"
        )
    if missing or unexpected or shapes:
        mismatch = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in shapes]
        detail = "; ".join(
            f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatch))
            if keys
        )
        target = model_name or type(model).__name__
        raise ValueError(f"{path} is not a checkpoint of {target} (another architecture?): {detail}")
    model.load_state_dict(state, strict=not drop_head)
    return model
