"""Benchmark statistics: confidence intervals, a paired test and rank groups from per-image predictions.

Pure numpy/scipy functions of per-image boolean correctness vectors (one per classifier: target, source,
stitched, lstsq-only, each control); nothing here needs the models. The text below is the section of
``results/README.md`` that explains the intervals.

**Intervals.** Every accuracy and every penalty (target − stitched, target − control, ...) comes with a 95%
*paired percentile bootstrap* interval: 2,000 resamples (seed 0) of the test images with replacement, the
same resample applied to every classifier of the cell, so a penalty's interval reflects only the images on
which target and stitched disagree (a stitched model right on exactly the target's images has the interval
[0, 0]). The interval is the 2.5th to 97.5th percentile of the resampled statistic (no bias correction); the
point estimate is the statistic on the full test set.

**Across seeds.** A leaderboard row averages several cells (seed pairs) scored on the same test images. Its
interval comes from a *hierarchical bootstrap*: each resample draws the seeds with replacement and one set
of image indices with replacement, applied to every drawn seed and every classifier (the images are shared,
so they are resampled jointly), and recomputes the mean over the drawn seeds. The interval thus includes
both image and seed variation; with a single seed it is the paired interval above.

**p-value.** "Stitched differs from target" is tested with the exact McNemar test: of the images on which
exactly one of the two is right, the number on which the target is right is Binomial(n, 1/2) under the null;
the p-value is the two-sided binomial test (``scipy.stats.binomtest``), and 1.0 when they never disagree.

**Ranks.** Rows are sorted by penalty; the best row opens rank group 1, and each next row shares the current
group's rank when its interval overlaps the interval of that group's best row, otherwise it opens the next
rank. A penalty whose interval contains 0 is marked not distinguishable from the target.

**Small test sets.** With fewer than 100 test images intervals are still computed, and results carry a note
that the test set is small.
"""

from stitching.stats.bootstrap import (
    BootstrapResult,
    Differences,
    Interval,
    hierarchical_bootstrap,
    paired_bootstrap,
)
from stitching.stats.mcnemar import discordant_pairs, mcnemar_p
from stitching.stats.ranking import RankedRow, distinguishable_from_zero, intervals_overlap, rank_groups
from stitching.stats.small import SMALL_TEST_SET, small_test_set_note

__all__ = [
    "SMALL_TEST_SET",
    "BootstrapResult",
    "Differences",
    "Interval",
    "RankedRow",
    "discordant_pairs",
    "distinguishable_from_zero",
    "hierarchical_bootstrap",
    "intervals_overlap",
    "mcnemar_p",
    "paired_bootstrap",
    "rank_groups",
    "small_test_set_note",
]
