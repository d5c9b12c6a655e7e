"""The task battery of the competence suite: binary tasks derived from the digit labels, each scored by a
linear probe on a model's frozen final features (the VTAB analogue of the PRH paper's competence).

Each task maps a digit label to 0/1. A probe is a ridge-regularised least-squares linear classifier on
standardised features (its direction is Fisher's discriminant; the threshold lies halfway between the two
classes' mean training scores, so a rare class is not ignored), fitted on the training split for all tasks
in one solve and scored on the test split with balanced accuracy (one digit against the rest is 10%
positives: plain accuracy would give 0.9 for answering "no"). A task counts as solved when its balanced
accuracy reaches the battery's threshold.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

TASKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    **{f"digit_{d}": (lambda y, d=d: y == d) for d in range(10)},
    "odd": lambda y: y % 2 == 1,
    "greater_than_4": lambda y: y > 4,
    "prime": lambda y: np.isin(y, (2, 3, 5, 7)),
    "closed_loop": lambda y: np.isin(y, (0, 6, 8, 9)),
    "multiple_of_3": lambda y: np.isin(y, (0, 3, 6, 9)),
}
"""Task name -> labels (digits 0-9) to a boolean target."""
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def task_labels(task: str, labels: np.ndarray) -> np.ndarray:
    """The 0/1 targets of ``task`` for digit ``labels``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"task {task!r} needs digit labels 0-9, got values {labels.min()}..{labels.max()}")
    return TASKS[task](labels).astype(np.int64)


def probe_scores(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    tasks: list[str] | tuple[str, ...] = TASK_NAMES,
    ridge: float = 1.0,
) -> dict[str, float]:
    """Balanced test accuracy of a linear probe per task; ``train``/``test`` are ``(features (N, D), digit
    labels (N,))``. ``ridge``: the L2 penalty per training sample on standardised features."""
    (x_train, y_train), (x_test, y_test) = train, test
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"train and test features differ in width: {x_train.shape[1]} vs {x_test.shape[1]}")
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    design = np.hstack([(x_train - mean) / std, np.ones((len(x_train), 1))])
    targets = np.stack([task_labels(t, y_train) for t in tasks], axis=1)
    for task, column in zip(tasks, targets.T, strict=True):
        if len(np.unique(column)) < 2:
            raise ValueError(f"task {task!r}: the training labels hold one class only; give more data")
    penalty = ridge * len(design) * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0  # no penalty on the bias
    weights = np.linalg.solve(design.T @ design + penalty, design.T @ (2.0 * targets - 1.0))
    scores = design @ weights
    thresholds = [(scores[t == 1, i].mean() + scores[t == 0, i].mean()) / 2 for i, t in enumerate(targets.T)]
    test_scores = np.hstack([(x_test - mean) / std, np.ones((len(x_test), 1))]) @ weights
    out = {}
    for i, task in enumerate(tasks):
        truth, predicted = task_labels(task, y_test), test_scores[:, i] > thresholds[i]
        out[task] = float((predicted[truth == 1].mean() + (~predicted[truth == 0]).mean()) / 2)
    return out


def battery_summary(scores: dict[str, float], threshold: float) -> dict[str, float]:
    """Tasks solved (balanced accuracy >= ``threshold``), their share and the mean balanced accuracy."""
    values = np.array(list(scores.values()))
    solved = int((values >= threshold).sum())
    return {"tasks_solved": solved, "tasks_share": solved / len(values), "probe_mean": float(values.mean())}


def probe_table(rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Models x tasks table of balanced accuracies, from ``{model: {task: score}}``."""
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")
