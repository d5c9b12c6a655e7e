"""The small-test-set note: intervals are still computed, but the reader is told they rest on few images."""

from __future__ import annotations

SMALL_TEST_SET = 100
"""Below this many test images, results carry a note that the test set is small."""


def small_test_set_note(n_images: int, threshold: int = SMALL_TEST_SET) -> str | None:
    """A one-line note when ``n_images < threshold`` (one image is then more than a point), else ``None``."""
    if n_images >= threshold:
        return None
    return (
        f"small test set: {n_images} images (< {threshold}); one image = {100.0 / n_images:.2g} points, "
        "so intervals are wide and rest on few images"
    )
