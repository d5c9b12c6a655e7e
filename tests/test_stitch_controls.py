"""The controls and training rules stitching needs (issue 13): clustered noise carries the label and nothing
else, training stops when the validation loss stops improving, the match objectives, kept predictions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stitching.bench.controls import clustered_noise
from stitching.bench.statistics import cell_statistics
from stitching.bench.store import ResultStore
from stitching.core import Recipe
from stitching.core.training import (
    MIN_DELTA,
    MatchTargets,
    TrainOptions,
    stitch_losses,
    train_adapter,
)


def _labels(n: int = 200, classes: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def test_clustered_noise_has_the_source_shape_and_carries_only_the_label():
    labels = _labels()
    reference = torch.randn(200, 8, 4, 4) * 3 + 1
    noise = clustered_noise(labels, reference, 5, seed=0, split=1)
    assert noise.shape == reference.shape and noise.dtype == reference.dtype
    assert noise.mean().item() == pytest.approx(reference.mean().item(), abs=1e-4)
    assert noise.std().item() == pytest.approx(reference.std().item(), rel=1e-4)
    # other images with the same scale give the same noise: nothing about the images enters
    other = reference[torch.randperm(200)]
    torch.testing.assert_close(clustered_noise(labels, other, 5, seed=0, split=1), noise)
    # the label is recoverable: nearest class mean classifies far above chance (1/5)
    flat = noise.flatten(1)
    means = torch.stack([flat[labels == c].mean(0) for c in range(5)])
    predicted = torch.cdist(flat, means).argmin(1)
    assert (predicted == labels).float().mean() > 0.9
    # splits draw their own samples around the same class centres
    test = clustered_noise(labels, reference, 5, seed=0, split=2)
    assert not torch.equal(test, noise)
    test_means = torch.stack([test.flatten(1)[labels == c].mean(0) for c in range(5)])
    assert torch.cdist(test_means, means).argmin(1).tolist() == list(range(5))


def _problem(n: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    back = nn.Sequential(nn.Linear(6, 4)).eval().requires_grad_(False)
    with torch.no_grad():
        back[0].weight.copy_(torch.eye(4, 6) * 5)
    return x, y, back


def test_patience_stops_at_a_plateau_and_keeps_the_best_epoch():
    x, y, back = _problem()
    adapter = nn.Linear(6, 6)
    recipe = Recipe(epochs=60, batch_size=32, lr=5e-2, schedule="constant", patience=3)
    log = train_adapter(adapter, back, x, y, recipe, TrainOptions(seed=0, val=(x, y)))
    assert log.converged is True
    assert len(log.epochs) < 60  # stopped early
    assert len(log.epochs) - log.best_epoch == 3
    best = log.epochs[log.best_epoch - 1]["val_loss"]  # the last epoch that improved by more than MIN_DELTA
    assert all(e["val_loss"] > best - MIN_DELTA for e in log.epochs)
    restored = nn.functional.cross_entropy(back(adapter(x)), y).item()
    assert restored == pytest.approx(best, abs=1e-6)  # the adapter is the best epoch's, not the last


def test_a_budget_that_runs_out_while_improving_is_reported_unconverged():
    x, y, back = _problem()
    recipe = Recipe(epochs=4, batch_size=32, lr=1e-3, schedule="constant")
    log = train_adapter(nn.Linear(6, 6), back, x, y, recipe, TrainOptions(seed=0, val=(x, y)))
    assert log.converged is False and log.best_epoch == 4
    losses = [e["val_loss"] for e in log.epochs]
    assert losses == sorted(losses, reverse=True)  # still falling


def test_stitch_losses_objectives():
    x, y, back = _problem(n=16)
    adapter = nn.Linear(6, 6)
    target = torch.randn(16, 6)
    task = stitch_losses([adapter], back, [x], y)
    match = stitch_losses([adapter], back, [x], y, objective="match", targets=(target, 2.0))
    both = stitch_losses([adapter], back, [x], y, objective="task+match", targets=(target, 2.0))
    expected_match = ((adapter(x) - target) ** 2).mean(1).mean() / 2.0
    torch.testing.assert_close(match[0], expected_match)
    torch.testing.assert_close(both, task + match)
    with pytest.raises(ValueError, match="needs the target's activations"):
        stitch_losses([adapter], back, [x], y, objective="match")


def test_match_objective_learns_the_targets_activation():
    x, y, back = _problem()
    mixing = torch.randn(6, 6, generator=torch.Generator().manual_seed(1))
    wanted = x @ mixing
    adapter = nn.Linear(6, 6)
    recipe = Recipe(epochs=40, batch_size=32, lr=3e-2)
    targets = MatchTargets.of(wanted)
    before = ((adapter(x) - wanted) ** 2).mean().item()
    train_adapter(adapter, back, x, y, recipe, TrainOptions(seed=0, objective="match", targets=targets))
    after = ((adapter(x) - wanted) ** 2).mean().item()
    assert after < 0.01 * before


def test_predictions_round_trip_and_give_the_records_statistics(tmp_path):
    labels = _labels(270, 10)
    target = labels.clone()
    stitched = labels.clone()
    stitched[:12] = (stitched[:12] + 1) % 10  # 12 images lost: a penalty of 4.4 points
    predictions = {"labels": labels, "target": target, "stitched": stitched, "source": target,
                   "lstsq": stitched, "init": stitched, "clustered_noise": target}  # fmt: skip
    store = ResultStore(tmp_path)
    store.write({"cell_id": "abc", "metrics": {}}, predictions=predictions)
    back = store.predictions("abc")
    assert back is not None and set(back) == set(predictions)
    assert all(torch.equal(torch.as_tensor(back[k]), predictions[k]) for k in predictions)
    stats = cell_statistics(back)
    low, high = stats["intervals"]["penalty"]
    assert 0 < low <= 12 / 270 <= high  # distinguishable from the target
    assert stats["intervals"]["noise_penalty"] == [0.0, 0.0]
    assert stats["penalty_p"] == pytest.approx(2 * 0.5**12)  # McNemar: 12 discordant, all one way
    assert store.predictions("missing") is None
