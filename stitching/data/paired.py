"""Paired image-text data: one caption per image, the same samples on both sides of a vision x language study.

Sources (:func:`load_paired`):

- a JSONL file, one ``{"image": PATH, "caption": TEXT}`` per line (``text`` may stand for ``caption``, as a
  string or a list whose ``caption_index``-th entry is used); image paths are relative to the file's folder;
- a folder holding ``captions.jsonl`` (read as above), or images each with a same-named ``.txt`` caption;
- ``hf:OWNER/NAME@REVISION``: a Hugging Face dataset with ``image`` and ``text`` columns through the
  ``datasets`` package (``stitching[text]``), e.g. the PRH set ``hf:minhuh/prh@wit_1024`` (1,024 Wikipedia
  image-caption pairs; Huh et al. 2024). Only this source needs internet (or a populated HF cache).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
PRH_SOURCE = "hf:minhuh/prh@wit_1024"
KNOWN_SIZES = {PRH_SOURCE: 1024}
"""Sample counts of hub sources, so that a dry run can check k < n without downloading."""


class PairedDataError(ValueError):
    """A paired dataset is malformed (unpaired samples, missing files, unreadable lines)."""


@dataclass
class PairedImageText(Dataset):
    """Images (paths or PIL images) and their captions, sample ``i`` on both sides."""

    images: Sequence[Any]
    captions: Sequence[str]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if len(self.images) != len(self.captions):
            raise PairedDataError(
                f"paired dataset {self.source}: {len(self.images)} images but {len(self.captions)} captions; "
                "every image needs exactly one caption"
            )
        if not self.captions:
            raise PairedDataError(f"paired dataset {self.source} is empty")
        bad = [i for i, c in enumerate(self.captions) if not isinstance(c, str) or not c.strip()]
        if bad:
            raise PairedDataError(f"paired dataset {self.source}: samples {bad[:5]} have no caption text")

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> tuple[Any, str]:
        return self.image(i), self.captions[i]

    def image(self, i: int) -> Any:
        """Sample ``i``'s image as an RGB PIL image."""
        from PIL import Image

        item = self.images[i]
        if isinstance(item, (str, Path)):
            with Image.open(item) as opened:
                return opened.convert("RGB")
        return item.convert("RGB")

    def head(self, limit: int | None) -> PairedImageText:
        """The first ``limit`` pairs (all of them for None)."""
        if limit is None or limit >= len(self):
            return self
        return PairedImageText(list(self.images[:limit]), list(self.captions[:limit]), self.source)

    def image_dataset(self, transform: Callable[[Any], Any]) -> Dataset:
        """The images alone, each passed through ``transform`` (e.g. a timm eval transform)."""
        return _Transformed(self, transform)


class _Transformed(Dataset):
    def __init__(self, pairs: PairedImageText, transform: Callable[[Any], Any]) -> None:
        self.pairs, self.transform = pairs, transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Any:
        return self.transform(self.pairs.image(i))


def _caption(record: dict[str, Any], caption_index: int, where: str) -> str:
    text = record.get("caption", record.get("text"))
    if isinstance(text, list):
        if not -len(text) <= caption_index < len(text):
            raise PairedDataError(f"{where}: caption_index {caption_index} but only {len(text)} captions")
        text = text[caption_index]
    if not isinstance(text, str):
        raise PairedDataError(f"{where}: needs a 'caption' (or 'text') string, got {record!r:.100}")
    return text


def read_jsonl(path: str | Path, caption_index: int = 0) -> PairedImageText:
    """Pairs from a JSONL file of ``{"image": ..., "caption": ...}`` records (module docstring)."""
    path = Path(path)
    images, captions, missing = [], [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PairedDataError(f"{where}: not JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("image"), str):
            raise PairedDataError(f"{where}: needs an 'image' path, got {line[:100]!r}")
        image = path.parent / record["image"]
        missing += [] if image.is_file() else [str(image)]
        images.append(image)
        captions.append(_caption(record, caption_index, where))
    if missing:
        raise PairedDataError(f"{path}: {len(missing)} image file(s) not found, e.g. {missing[:3]}")
    return PairedImageText(images, captions, str(path))


def read_folder(folder: str | Path, caption_index: int = 0) -> PairedImageText:
    """Pairs from ``folder/captions.jsonl``, else from images with same-named ``.txt`` captions."""
    folder = Path(folder)
    if (folder / "captions.jsonl").is_file():
        return read_jsonl(folder / "captions.jsonl", caption_index)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    texts = sorted(folder.glob("*.txt"))
    unpaired = sorted({p.stem for p in images} ^ {t.stem for t in texts})
    if unpaired or not images:
        raise PairedDataError(
            f"paired folder {folder}: {len(images)} images but {len(texts)} captions; every image needs a "
            f"same-named .txt caption (or write captions.jsonl); unpaired: {unpaired[:5]}"
        )
    return PairedImageText(images, [t.read_text().strip() for t in texts], str(folder))


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """``"hf:owner/name@revision"`` -> ``("owner/name", "revision")``."""
    body = source.removeprefix("hf:")
    name, _, revision = body.partition("@")
    if name.count("/") != 1 or not all(name.split("/")):
        raise PairedDataError(f"hub source {source!r}: expected hf:OWNER/NAME@REVISION, e.g. {PRH_SOURCE}")
    return name, revision or None


def hub_dataset(source: str, caption_index: int = 0) -> PairedImageText:
    """A Hugging Face dataset's ``train`` split with ``image`` and ``text`` columns (internet or HF cache)."""
    from stitching.prh._optional import require

    name, revision = parse_hub_source(source)
    datasets = require("datasets", f"the paired dataset {source}")
    try:
        data = datasets.load_dataset(name, revision=revision, split="train")
    except Exception as error:  # offline, unknown name or revision: say which and why
        raise PairedDataError(
            f"could not load {source} through Hugging Face datasets ({type(error).__name__}: {error}); it "
            "needs internet or a populated HF cache (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), or use a "
            "local JSONL or folder of image-caption pairs"
        ) from error
    where = f"{source} sample"
    captions = [
        _caption(row, caption_index, f"{where} {i}") for i, row in enumerate(data.select_columns("text"))
    ]
    return PairedImageText(list(data["image"]), captions, source)


def load_paired(source: str, limit: int | None = None, caption_index: int = 0) -> PairedImageText:
    """Pairs from a JSONL file, a folder or ``hf:OWNER/NAME@REVISION`` (module docstring), first ``limit``."""
    if source.startswith("hf:"):
        return hub_dataset(source, caption_index).head(limit)
    path = Path(source).expanduser()
    if path.is_dir():
        return read_folder(path, caption_index).head(limit)
    if path.is_file():
        return read_jsonl(path, caption_index).head(limit)
    raise FileNotFoundError(
        f"paired dataset {source!r} not found: give a JSONL file, a folder of images with captions, or "
        f"hf:OWNER/NAME@REVISION (e.g. {PRH_SOURCE})"
    )


def paired_size(source: str, caption_index: int = 0) -> int | None:
    """The number of pairs without loading images (None for hub sources of unknown size)."""
    if source.startswith("hf:"):
        parse_hub_source(source)
        return KNOWN_SIZES.get(source)
    return len(load_paired(source, caption_index=caption_index))
