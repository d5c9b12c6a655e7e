"""Platonic Representation Hypothesis experiments (Huh, Cheung, Wang & Isola 2024).

``text``: Hugging Face encoders and their per-layer pooled features; ``colour``: the XKCD colour names and
their CIELAB coordinates; ``experiment``: the colour experiment (does a language model's colour kernel
resemble perception?), run as ``python -m stitching.prh.colour_experiment``. Needs ``stitching[text]``.
"""
