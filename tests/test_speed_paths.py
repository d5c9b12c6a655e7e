"""The speed paths compute what the plain paths compute: multi-adapter passes, bf16 / channels_last switches,
and the straightforward harness vs training on cached activations. Correctness only, no timing."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from stitching.adapters import create_adapter
from stitching.core import Recipe, Speed
from stitching.core.evaluate import predict
from stitching.core.training import TrainOptions, train_adapter, train_adapters
from stitching.cuts import ActivationSpec, split_model
from stitching.models import create_model
from stitching.nn import freeze

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from straightforward import train_straightforward


def _models(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("mini_resnet", num_classes=10).eval(), create_model(
        "mini_resnet", num_classes=10
    ).eval()


def _data(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def _adapter(x: torch.Tensor, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    spec = ActivationSpec.from_tensor(x[:1])
    return create_adapter(spec, spec, init="random")


def _params(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


@pytest.fixture(scope="module")
def problem():
    source, target = _models()
    images, labels = _data()
    src_front, _ = split_model(source, "layer2")
    _, back = split_model(target, "layer2")
    with torch.no_grad():
        xs = src_front(images)
    return source, target, freeze(back), images, labels, xs


def test_train_adapters_equals_separate_passes(problem):
    *_, back, _, labels, xs = problem
    other = xs.flip(0)  # a second source activation sharing the back, like the random-source control
    recipes = [
        Recipe(epochs=2, batch_size=8, lr=1e-2),
        Recipe(epochs=2, batch_size=8, lr=3e-3, optimizer="sgd"),
    ]
    speed = Speed(channels_last=False)
    alone = [_adapter(xs, 0), _adapter(xs, 1)]
    logs_alone = [
        train_adapter(a, back, x, labels, r, TrainOptions(seed=3, val=(x, labels), speed=speed))
        for a, x, r in zip(alone, (xs, other), recipes, strict=True)
    ]
    fused = [_adapter(xs, 0), _adapter(xs, 1)]
    options = TrainOptions(seed=3, val=([xs, other], labels), speed=speed)
    logs_fused = train_adapters(fused, back, [xs, other], labels, recipes, options)
    for seed, (a, b, la, lb) in enumerate(zip(alone, fused, logs_alone, logs_fused, strict=True)):
        assert not torch.equal(_params(a), _params(_adapter(xs, seed)))  # it moved from its own start
        torch.testing.assert_close(_params(b), _params(a), rtol=1e-4, atol=1e-5)
        assert lb.steps == la.steps == 2 * 2
        assert [e["val_acc"] for e in lb.epochs] == [e["val_acc"] for e in la.epochs]
        assert lb.initial["val_acc"] == la.initial["val_acc"]


def test_train_adapters_rejects_mismatched_inputs_and_recipes(problem):
    *_, back, _, labels, xs = problem
    with pytest.raises(ValueError, match="one per adapter"):
        train_adapters([_adapter(xs, 0)], back, [xs, xs], labels, Recipe(epochs=1))
    with pytest.raises(ValueError, match="share epochs, batch_size and patience"):
        train_adapters(
            [_adapter(xs, 0), _adapter(xs, 1)],
            back,
            [xs, xs],
            labels,
            [Recipe(epochs=1), Recipe(epochs=2)],
        )


def test_fused_checkpoint_resumes_every_adapter(problem, tmp_path, monkeypatch):
    *_, back, _, labels, xs = problem
    recipe = Recipe(epochs=3, batch_size=8, lr=1e-2)
    inputs = [xs, xs.flip(0)]
    straight = [_adapter(xs, 0), _adapter(xs, 1)]
    train_adapters(straight, back, inputs, labels, recipe, TrainOptions(seed=1))

    class Stop(Exception):
        pass

    original, calls = torch.optim.AdamW.step, {"n": 0}

    def step(self, *a, **k):  # killed during epoch 3: 2 optimizers x 2 steps per epoch
        calls["n"] += 1
        if calls["n"] > 2 * 2 * 2:
            raise Stop
        return original(self, *a, **k)

    ckpt = TrainOptions(seed=1, checkpoint=tmp_path / "adapters.pt")
    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", step)
        with pytest.raises(Stop):
            train_adapters([_adapter(xs, 0), _adapter(xs, 1)], back, inputs, labels, recipe, ckpt)
    resumed = [_adapter(xs, 5), _adapter(xs, 6)]  # other inits: everything must come from the checkpoint
    logs = train_adapters(resumed, back, inputs, labels, recipe, ckpt)
    assert all(log.resumed_from_epoch == 2 and len(log.epochs) == 3 for log in logs)
    for a, b in zip(straight, resumed, strict=True):
        torch.testing.assert_close(_params(b), _params(a))
    with pytest.raises(ValueError, match="holds 2 adapters"):
        train_adapters([_adapter(xs, 0)], back, [xs], labels, recipe, ckpt)


@pytest.mark.parametrize("switch", ["channels_last", "bf16"])
def test_speed_switches_keep_predictions(problem, switch):
    *_, back, _, _, xs = problem
    adapter = _adapter(xs, 0).eval()
    plain = predict(lambda z: back(adapter(z)), xs, speed=Speed(channels_last=False))
    speed = (
        Speed(channels_last=True)
        if switch == "channels_last"
        else Speed(precision="bf16", channels_last=False)
    )
    fast = predict(lambda z: back(adapter(z)), xs, speed=speed)
    if switch == "channels_last":
        torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    else:  # bfloat16 keeps 8 bits of mantissa: compare predictions and logits loosely
        assert (fast.argmax(1) == plain.argmax(1)).float().mean() >= 0.9
        assert (fast - plain).abs().max() < 0.1 * plain.abs().max()
    back.to(memory_format=torch.contiguous_format)


def test_channels_last_training_matches_contiguous(problem):
    *_, back, _, labels, xs = problem
    # SGD: parameter differences stay proportional to gradient differences (Adam's first steps amplify
    # rounding differences of near-zero gradients to a full step)
    recipe = Recipe(epochs=1, batch_size=8, lr=1e-2, optimizer="sgd")
    runs = []
    for channels_last in (False, True):
        a = _adapter(xs, 0)
        train_adapter(a, back, xs, labels, recipe, TrainOptions(speed=Speed(channels_last=channels_last)))
        runs.append(_params(a))
    back.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-3, atol=1e-4)


def test_bf16_training_runs_and_moves_the_adapter(problem):
    *_, back, _, labels, xs = problem
    a = _adapter(xs, 0)
    before = _params(a)
    log = train_adapter(
        a, back, xs, labels, Recipe(epochs=1, batch_size=8), TrainOptions(speed=Speed(precision="bf16"))
    )
    back.to(memory_format=torch.contiguous_format)
    assert log.steps == 2 and torch.isfinite(_params(a)).all() and not torch.equal(_params(a), before)


@pytest.mark.parametrize("weight_grads", [True, False])
def test_straightforward_harness_computes_what_the_cached_path_computes(problem, weight_grads):
    source, target, back, images, labels, xs = problem
    recipe = Recipe(epochs=2, batch_size=8, lr=1e-2)
    ours = _adapter(xs, 0)
    options = TrainOptions(seed=2, val=(xs, labels), speed=Speed(channels_last=False))
    log = train_adapter(ours, back, xs, labels, recipe, options)
    naive = _adapter(xs, 0)
    flags = [p.requires_grad for p in target.parameters()]
    hlog = train_straightforward(
        source, target, "layer2", "layer2", naive, images, labels, recipe, seed=2, val=(images, labels),
        weight_grads=weight_grads,
    )  # fmt: skip
    torch.testing.assert_close(_params(naive), _params(ours), rtol=1e-4, atol=1e-5)
    assert [e["val_acc"] for e in hlog.epochs] == [e["val_acc"] for e in log.epochs]
    assert hlog.steps == log.steps
    assert [p.requires_grad for p in target.parameters()] == flags  # restored
    assert all(p.grad is None for p in target.parameters())


@pytest.mark.slow
def test_compiled_back_matches_eager(problem):
    *_, back, _, labels, xs = problem
    runs = []
    for compile_ in (False, True):
        a = _adapter(xs, 0)
        recipe = Recipe(epochs=1, batch_size=8, optimizer="sgd")
        speed = Speed(compile=compile_, channels_last=False)
        train_adapter(a, copy.deepcopy(back), xs, labels, recipe, TrainOptions(speed=speed))
        runs.append(_params(a))
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-3, atol=1e-4)
