"""Adapters: layout/shape handling, initialisations (identity, closed-form lstsq with and without BN, low
rank), parameter counts and construction-time errors. Small tensors only."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stitching.adapters import Adapter, AdapterConfig, create_adapter
from stitching.cuts._spec import ActivationSpec


def fmap(c, h, w):
    return ActivationSpec("nchw", c, (h, w))


def tokens(c, h, w, prefix=0):
    return ActivationSpec("nld", c, (h, w), prefix)


def batch(spec, n=3):
    return torch.randn(n, *spec.shape)


LAYOUTS = {
    "nchw->nchw same grid": (fmap(4, 4, 4), fmap(6, 4, 4)),
    "nchw->nchw downsample": (fmap(4, 4, 4), fmap(6, 2, 2)),
    "nchw->nchw upsample non-square": (fmap(4, 2, 3), fmap(6, 4, 5)),
    "nchw->nld 0 prefix": (fmap(4, 4, 4), tokens(6, 4, 4, 0)),
    "nchw->nld 1 prefix": (fmap(4, 4, 4), tokens(6, 2, 2, 1)),
    "nchw->nld 2 prefix": (fmap(4, 4, 4), tokens(6, 4, 4, 2)),
    "nld->nchw non-square": (tokens(4, 2, 3, 1), fmap(6, 2, 3)),
    "nld->nchw non-square resampled": (tokens(4, 3, 2, 0), fmap(6, 4, 6)),
    "nld->nld same prefix": (tokens(4, 2, 3, 1), tokens(6, 2, 3, 1)),
    "nld->nld different prefix": (tokens(4, 2, 3, 1), tokens(6, 3, 3, 2)),
    "nld->nld prefix dropped": (tokens(4, 2, 3, 2), tokens(6, 2, 3, 0)),
}


@pytest.mark.parametrize("norm", ["none", "bn", "bn_pre", "bn_post"])
@pytest.mark.parametrize("pair", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_every_layout_combination_produces_the_target_shape(pair, norm):
    source, target = pair
    adapter = create_adapter(source, target, norm=norm)
    out = adapter(batch(source))
    assert out.shape == (3, *target.shape)
    out.square().mean().backward()  # trainable end to end, resampling included
    assert all(p.grad is not None for p in adapter.parameters())
    assert adapter.eval()(batch(source)).shape == (3, *target.shape)


def test_tokens_to_feature_map_drops_prefix_and_reshapes_row_major():
    source, target = tokens(3, 2, 3, 1), fmap(3, 2, 3)
    adapter = create_adapter(source, target, init="identity", norm="none")
    x = batch(source)
    out = adapter(x)
    for h in range(2):
        for w in range(3):
            torch.testing.assert_close(out[:, :, h, w], x[:, 1 + h * 3 + w])


def test_feature_map_to_tokens_flattens_row_major_and_supplies_zero_prefix():
    source, target = fmap(3, 2, 3), tokens(3, 2, 3, 2)
    adapter = create_adapter(source, target, init="identity", norm="none")
    x = batch(source)
    out = adapter(x)
    torch.testing.assert_close(out[:, 2:], x.flatten(2).transpose(1, 2))
    assert torch.equal(out[:, :2], torch.zeros(3, 2, 3))


@pytest.mark.parametrize(
    "source",
    [fmap(5, 3, 4), tokens(5, 3, 4, 0), tokens(5, 2, 3, 1), tokens(5, 2, 2, 2)],
    ids=["nchw", "nld-0", "nld-1", "nld-2"],
)
@pytest.mark.parametrize("norm", ["none", "bn"])
def test_identity_init_reproduces_the_input(source, norm):
    adapter = create_adapter(source, source, init="identity", norm=norm).eval()
    x = batch(source)
    torch.testing.assert_close(adapter(x), x)
    if norm == "none":  # without BN also in train mode
        torch.testing.assert_close(adapter.train()(x), x)


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("area", lambda x: x.reshape(3, 4, 2, 2, 2, 2).mean((3, 5))),
        ("nearest", lambda x: x.repeat_interleave(2, 2).repeat_interleave(2, 3)),
        ("bilinear", lambda x: F.interpolate(x, size=(8, 8), mode="bilinear", antialias=True)),
    ],
)
def test_resampling_modes(mode, reference):
    down = mode == "area"
    source, target = (fmap(4, 4, 4), fmap(4, 2, 2)) if down else (fmap(4, 4, 4), fmap(4, 8, 8))
    if mode == "nearest":
        target = fmap(4, 8, 8)
    adapter = create_adapter(source, target, init="identity", norm="none", resample=mode)
    x = batch(source)
    torch.testing.assert_close(adapter(x), reference(x))


def test_bilinear_downsampling_is_antialiased():
    # Rows 1, 2, 5, 6 are 1: plain bilinear 8 -> 2 samples exactly those rows (all ones, aliased); a
    # low-pass filter sees the 0.5 average.
    x = torch.isin(torch.arange(8) % 4, torch.tensor([1, 2])).float()[:, None].expand(1, 1, 8, 8)
    assert torch.equal(F.interpolate(x, size=(2, 2), mode="bilinear"), torch.ones(1, 1, 2, 2))
    adapter = create_adapter(fmap(1, 8, 8), fmap(1, 2, 2), init="identity", norm="none")
    assert (adapter(x) - 0.5).abs().max() < 0.1


# ---- lstsq -------------------------------------------------------------------------------------------------


def ridge_reference(x, y, alpha, intercept=True):
    """NumPy closed form with the documented relative alpha: lambda = alpha * trace(Xc^T Xc) / D."""
    xm, ym = (x.mean(0), y.mean(0)) if intercept else (np.zeros(x.shape[1]), np.zeros(y.shape[1]))
    xc, yc = x - xm, y - ym
    lam = alpha * np.trace(xc.T @ xc) / x.shape[1]
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ yc)
    return w, ym - xm @ w


def rows(t):
    """(N, C, H, W) or (N, C, L) -> (N * positions, C) float64, the regression's sample rows."""
    return t.flatten(2).transpose(1, 2).reshape(-1, t.shape[1]).double().numpy()


def rows_t(t):
    return torch.from_numpy(rows(t.detach())).float()


def paired_data(source, target, n=24, seed=0):
    """Source activations and target activations that depend linearly on them plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *source.shape, generator=g) * 2 + 1
    mix = torch.randn(source.channels, target.channels, generator=g)
    y = torch.randn(n, *target.shape, generator=g) * 0.3 + 0.5
    if source.shape[-2:] == target.shape[-2:] or source.layout == target.layout == "nld":
        y = y + (x.movedim(1, -1) @ mix).movedim(-1, 1) if source.layout == "nchw" else y + x @ mix
    return x, y


def split(x, y, size):
    return list(zip(x.split(size), y.split(size), strict=True))


def test_lstsq_matches_numpy_ridge_with_resampling():
    source, target = fmap(5, 4, 4), fmap(3, 2, 2)
    x, y = paired_data(source, target)
    adapter = create_adapter(source, target, init="lstsq", norm="none", resample="area", data=split(x, y, 5))
    x_resampled = x.reshape(24, 5, 2, 2, 2, 2).mean((3, 5))  # area = 2x2 block means
    w, b = ridge_reference(rows(x_resampled), rows(y), 1e-3)
    expected = torch.from_numpy(rows(x_resampled) @ w + b).float()
    torch.testing.assert_close(rows_t(adapter.eval()(x)), expected, atol=1e-4, rtol=1e-4)
    assert adapter.fit_stats["samples"] == 24 * 4


def test_lstsq_multi_batch_equals_single_batch():
    source, target = tokens(5, 2, 3, 1), tokens(4, 2, 3, 1)
    x, y = paired_data(source, target)
    one = create_adapter(source, target, init="lstsq", norm="none", data=[(x, y)])
    many = create_adapter(source, target, init="lstsq", norm="none", data=iter(split(x, y, 7)))
    for p, q in zip(one.parameters(), many.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


def test_init_lstsq_method_equals_create_adapter_and_takes_a_ridge_override():
    source, target = fmap(5, 2, 2), fmap(4, 2, 2)
    x, y = paired_data(source, target)
    made = create_adapter(source, target, init="lstsq", ridge=0.5, data=[(x, y)])
    adapter = Adapter(source, target).init_lstsq_(iter([(x, y)]), ridge=0.5)
    for p, q in zip(made.state_dict().values(), adapter.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q)
    weaker = Adapter(source, target).init_lstsq_([(x, y)], ridge=1e-3)
    assert weaker.fit_stats["lambda"] < adapter.fit_stats["lambda"]
    assert weaker.fit_stats["r2"] > adapter.fit_stats["r2"]


def test_lstsq_maps_prefix_tokens_as_samples_when_counts_match():
    source, target = tokens(5, 2, 2, 1), tokens(4, 2, 2, 1)
    x, y = paired_data(source, target)
    adapter = create_adapter(source, target, init="lstsq", norm="none", data=[(x, y)])
    w, b = ridge_reference(x.reshape(-1, 5).double().numpy(), y.reshape(-1, 4).double().numpy(), 1e-3)
    expected = torch.from_numpy(x.reshape(-1, 5).double().numpy() @ w + b).float().reshape(24, 5, 4)
    torch.testing.assert_close(adapter(x), expected, atol=1e-4, rtol=1e-4)
    assert adapter.prefix is None and adapter.fit_stats["samples"] == 24 * 5


@pytest.mark.parametrize("init", ["random", "lstsq"])
def test_learned_prefix_is_the_target_mean_prefix_when_data_is_given(init):
    source, target = fmap(5, 2, 2), tokens(4, 2, 2, 2)
    x, y = paired_data(source, target)
    adapter = create_adapter(source, target, init=init, data=split(x, y, 10))
    torch.testing.assert_close(adapter.prefix.data, y[:, :2].mean(0))
    torch.testing.assert_close(adapter.eval()(x)[:, :2], y[:, :2].mean(0).expand(24, 2, 4))


@pytest.mark.parametrize("norm", ["bn", "bn_pre", "bn_post"])
@pytest.mark.parametrize("bias", [True, False])
def test_lstsq_with_batchnorm_gives_the_ridge_prediction_in_eval_and_train_mode(norm, bias):
    source, target = fmap(5, 3, 3), fmap(4, 3, 3)
    x, y = paired_data(source, target)
    adapter = create_adapter(source, target, init="lstsq", norm=norm, bias=bias, data=split(x, y, 8))
    xr, yr = rows(x), rows(y)
    if norm in ("bn", "bn_pre"):  # the conv regresses on the input as normalised by the data statistics
        xr = (xr - xr.mean(0)) / np.sqrt(xr.var(0) + adapter.norm_pre.eps)
    w, b = ridge_reference(xr, yr, 1e-3, intercept=bias or norm != "bn_pre")
    expected = torch.from_numpy(xr @ w + b).float()
    torch.testing.assert_close(rows_t(adapter.eval()(x)), expected, atol=1e-4, rtol=1e-4)
    # Train mode normalises with batch statistics: on the whole data set as one batch they are the data's.
    torch.testing.assert_close(rows_t(adapter.train()(x)), expected, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("norm", ["none", "bn"])
def test_low_rank_lstsq_is_reduced_rank_regression(norm):
    source, target = fmap(6, 3, 3), fmap(5, 3, 3)
    x, y = paired_data(source, target)
    adapter = create_adapter(source, target, init="lstsq", norm=norm, rank=2, data=[(x, y)]).eval()
    xr = rows(x)
    if norm == "bn":
        xr = (xr - xr.mean(0)) / np.sqrt(xr.var(0) + 1e-5)
    w, b = ridge_reference(xr, rows(y), 1e-3)
    fitted = xr @ w + b
    centre = fitted.mean(0)
    _, _, vt = np.linalg.svd(fitted - centre, full_matrices=False)
    expected = torch.from_numpy((fitted - centre) @ vt[:2].T @ vt[:2] + centre).float()
    torch.testing.assert_close(rows_t(adapter(x)), expected, atol=1e-4, rtol=1e-4)


def test_lstsq_beats_random_init():
    source, target = tokens(6, 2, 2, 1), fmap(4, 2, 2)
    x, y = paired_data(source, target)
    y = y + (x[:, 1:] @ torch.randn(6, 4)).transpose(1, 2).reshape(24, 4, 2, 2)
    fitted = create_adapter(source, target, init="lstsq", data=[(x, y)]).eval()
    random = create_adapter(source, target).eval()
    assert F.mse_loss(fitted(x), y) < 0.2 * F.mse_loss(random(x), y)
    assert fitted.fit_stats["r2"] > 0.9


# ---- parameters, config, errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["none", "bn", "bn_pre", "bn_post"])
@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("target", [fmap(6, 4, 4), tokens(6, 4, 4, 2)], ids=["nchw", "nld-2"])
def test_parameter_count_formula(norm, rank, bias, target):
    c_in, c_out = 5, 6
    adapter = create_adapter(fmap(c_in, 4, 4), target, norm=norm, rank=rank, bias=bias)
    weights = c_in * c_out if rank is None else rank * (c_in + c_out)
    bn = 2 * c_in * (norm in ("bn", "bn_pre")) + 2 * c_out * (norm in ("bn", "bn_post"))
    assert adapter.num_parameters == weights + c_out * bias + bn + target.num_prefix_tokens * c_out
    adapter.proj.requires_grad_(False)
    assert adapter.num_parameters == bn + target.num_prefix_tokens * c_out


def test_config_is_a_plain_dataclass_with_keyword_overrides():
    config = AdapterConfig(norm="none", rank=2)
    assert all(
        isinstance(v, (str, int, float, bool, type(None))) for v in dataclasses.asdict(config).values()
    )
    assert AdapterConfig(**dataclasses.asdict(config)) == config
    adapter = create_adapter(fmap(4, 2, 2), fmap(6, 2, 2), config, rank=3)
    assert isinstance(adapter, Adapter) and adapter.config == AdapterConfig(norm="none", rank=3)
    assert adapter.proj[0].out_channels == 3


CONSTRUCTION_ERRORS = {
    "identity channels": (
        dict(init="identity"),
        ValueError,
        r"equal channel counts, got source 4 and target 6; use init='lstsq'",
    ),
    "identity low rank": (dict(init="identity", rank=2), ValueError, "channel counts"),
    "rank too large": (dict(rank=4), ValueError, r"rank=4 >= min\(C_in=4, C_out=6\)"),
    "rank zero": (dict(rank=0), ValueError, "rank must be >= 1"),
    "rank float": (dict(rank=2.0), TypeError, "rank must be an int"),
    "unknown norm": (dict(norm="batchnorm"), ValueError, r"unknown norm 'batchnorm'.*choose from"),
    "norm typo": (dict(norm="bn_psot"), ValueError, "did you mean bn_post"),
    "unknown init": (dict(init="lsq"), ValueError, "did you mean lstsq"),
    "unknown resample": (dict(resample="bicubic"), ValueError, "unknown resample"),
    "option typo": (dict(nrom="bn"), TypeError, "did you mean norm\\?"),
    "lstsq without data": (dict(init="lstsq"), ValueError, "needs data="),
    "negative ridge": (dict(ridge=-1.0), ValueError, "ridge must be >= 0"),
}


@pytest.mark.parametrize("case", CONSTRUCTION_ERRORS.values(), ids=CONSTRUCTION_ERRORS.keys())
def test_incompatible_options_fail_at_construction(case):
    kwargs, error, match = case
    with pytest.raises(error, match=match):
        create_adapter(fmap(4, 2, 2), fmap(6, 2, 2), **kwargs)


def test_identity_with_low_rank_and_equal_channels_is_rejected():
    with pytest.raises(ValueError, match="full rank"):
        create_adapter(fmap(4, 2, 2), fmap(4, 2, 2), init="identity", rank=2)


def test_specs_without_a_usable_grid_are_rejected():
    with pytest.raises(ValueError, match=r"target spec .* needs a patch grid"):
        create_adapter(fmap(4, 2, 2), ActivationSpec("nld", 6, None, 1))
    with pytest.raises(ValueError, match="source spec"):
        create_adapter(ActivationSpec("nchw", 4, (0, 2)), fmap(6, 2, 2))
    with pytest.raises(TypeError, match="must be an ActivationSpec"):
        create_adapter((4, 2, 2), fmap(6, 2, 2))


def test_forward_names_the_shape_that_does_not_match_the_source_spec():
    adapter = create_adapter(tokens(4, 2, 3, 1), fmap(6, 2, 3))
    with pytest.raises(ValueError, match=r"source activation has shape \(2, 6, 4\), expected \(N, 7, 4\)"):
        adapter(torch.randn(2, 6, 4))
    with pytest.raises(ValueError, match="expected"):
        adapter(torch.randn(7, 4))


def test_bad_data_batches_fail_with_the_batch_named():
    source, target = fmap(4, 2, 2), fmap(6, 2, 2)
    good = (batch(source), batch(target))
    with pytest.raises(ValueError, match=r"target \(data batch 1\) activation has shape \(3, 6, 3, 3\)"):
        create_adapter(source, target, init="lstsq", data=[good, (batch(source), torch.randn(3, 6, 3, 3))])
    with pytest.raises(ValueError, match="data batch 0: 3 source vs 2 target"):
        create_adapter(source, target, init="lstsq", data=[(batch(source), batch(target, n=2))])
    with pytest.raises(ValueError, match="empty"):
        create_adapter(source, target, init="lstsq", data=[])


@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("resample", ["bilinear", "area", "nearest"])
@pytest.mark.parametrize(
    "pair",
    [
        LAYOUTS["nld->nchw non-square resampled"],
        LAYOUTS["nchw->nld 1 prefix"],
        (tokens(4, 2, 3, 1), fmap(6, 4, 2)),
    ],
    ids=["up", "down", "up-and-down"],
)
def test_training_on_frozen_inputs_folds_the_pre_batchnorm_exactly(pair, resample, momentum, rank):
    """Inputs without gradient take the fast path: the pre-BatchNorm folded into the linear map, and when
    the target grid is larger, the map applied before upsampling with the upsampled map's statistics. It
    must match the plain path (BN, linear, resampling as written) in output, parameter gradients and running
    statistics, over two training steps and then in eval mode (float64, so that gradients which are zero in
    exact arithmetic, e.g. a bias just before the post-BatchNorm, compare)."""
    torch.manual_seed(0)
    folded = create_adapter(*pair, norm="bn", rank=rank, resample=resample).double().train()
    folded.norm_pre.momentum = momentum
    reference = copy.deepcopy(folded)
    for _ in range(2):
        x = batch(pair[0], n=5).double() * 3 + 1
        out_folded = folded(x)  # x needs no gradient: folded path
        out_reference = reference(x.clone().requires_grad_())  # the plain BatchNorm path
        torch.testing.assert_close(out_folded, out_reference, rtol=1e-10, atol=1e-10)
        weights = torch.randn_like(out_folded)
        (out_folded * weights).sum().backward()
        (out_reference * weights).sum().backward()
    for (name, a), b in zip(folded.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")
    for (name, a), b in zip(folded.named_buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
    x = batch(pair[0], n=4).double()
    torch.testing.assert_close(folded.eval()(x), reference.eval()(x.requires_grad_()), rtol=1e-10, atol=1e-10)


def test_a_synchronised_pre_batchnorm_is_not_folded_away():
    """DDP on CUDA swaps in SyncBatchNorm; the fast paths (plain BatchNorm only) must leave it in place."""
    pair = LAYOUTS["nld->nchw non-square resampled"]
    adapter = create_adapter(*pair, norm="bn").eval()
    adapter.norm_pre.running_mean.fill_(5.0)  # a normalisation that visibly changes the output
    synced = copy.deepcopy(adapter)
    synced.norm_pre = torch.nn.SyncBatchNorm.convert_sync_batchnorm(synced.norm_pre)
    x = batch(pair[0])
    torch.testing.assert_close(synced(x), adapter(x))
