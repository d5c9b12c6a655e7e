"""Controls: what a stitch scores when the source carries nothing, or only the label.

Each control replaces the source's activations and is then stitched exactly like the real source: the same
adapter, initialisation, objective and training. A control's metrics are prefixed with its name's prefix
(``control_*`` for ``random_source``, ``noise_*`` for ``clustered_noise``).

- ``random_source``: an untrained model of the source's architecture (its front's activations). Shallow cuts
  of a random network still carry the image; deep ones much less.
- ``clustered_noise`` (Smith, Mannering & Marcu, ICML 2025, "Functional Alignment Can Mislead"): one
  Gaussian cluster per class in the shape of the source activation. It carries the label and nothing else
  about the image, so a high stitched accuracy from it shows that stitching success alone does not prove a
  shared representation.
"""

from __future__ import annotations

import torch

from stitching._utils import stable_hash

PREFIXES = {"random_source": "control", "clustered_noise": "noise"}
"""Metric-name prefix of each control."""

CLUSTER_NOISE = 1.0
"""Standard deviation of a sample around its class centre, in units of the centres' spread."""


def stable_int(obj: object) -> int:
    """A 60-bit integer seed derived from ``obj`` (stable across processes and versions)."""
    return int(stable_hash(obj, 15), 16)


def clustered_noise(
    labels: torch.Tensor, reference: torch.Tensor, num_classes: int, seed: int, split: int
) -> torch.Tensor:
    """Per-class Gaussian clusters shaped like ``reference`` (activations of the real source).

    Class ``c`` has a centre ``m_c ~ N(0, I)`` drawn from ``seed`` (the same for every split); a sample of
    label ``y`` is ``m_y + CLUSTER_NOISE * e`` with ``e ~ N(0, I)`` drawn from ``(seed, split)``; the result
    is rescaled to the reference's mean and standard deviation, so that the adapter sees the real source's
    scale. Depends on the labels and the seeds only, never on the images.
    """
    shape = tuple(reference.shape[1:])
    centres = torch.randn((num_classes, *shape), generator=torch.Generator().manual_seed(seed))
    noise_seed = stable_int((seed, split))
    noise = torch.randn((len(labels), *shape), generator=torch.Generator().manual_seed(noise_seed))
    samples = centres[labels.long()] + CLUSTER_NOISE * noise
    ref = reference[: min(len(reference), 4096)].float()
    scale = ref.std() / samples.std().clamp_min(1e-12)
    return ((samples - samples.mean()) * scale + ref.mean()).to(reference.dtype)
