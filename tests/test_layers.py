"""Weight-normalised convolutions and SnakeBeta against PyTorch (torch.nn.utils.weight_norm) and the formula."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from stableaudio_jax.models.layers import SnakeBeta, WNConv1d, WNConvTranspose1d, snake_beta


def _randomised_torch(module, seed):
    torch.manual_seed(seed)
    module = torch.nn.utils.weight_norm(module)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    return module


def _run_torch(module, x_btc):
    with torch.no_grad():
        return module(torch.from_numpy(x_btc.transpose(0, 2, 1).copy())).numpy().transpose(0, 2, 1)


@pytest.mark.parametrize("kernel,stride,dilation,padding", [(7, 1, 1, 3), (7, 1, 9, 27), (1, 1, 1, 0), (3, 1, 1, 1),
                                                            (4, 2, 1, 1), (16, 8, 1, 4), (6, 3, 1, 2)])
def test_wnconv1d_matches_torch(kernel, stride, dilation, padding):
    cin, cout = 5, 6
    ref = _randomised_torch(torch.nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation, padding=padding), 0)
    x = np.random.default_rng(1).standard_normal((2, 48, cin)).astype(np.float32)
    params = {"params": {"weight_v": ref.weight_v.detach().numpy().transpose(2, 1, 0),
                         "weight_g": ref.weight_g.detach().numpy().reshape(-1),
                         "bias": ref.bias.detach().numpy()}}
    conv = WNConv1d(cout, kernel, stride=stride, dilation=dilation, padding=padding)
    ours = np.asarray(conv.apply(params, jnp.asarray(x)))
    expected = _run_torch(ref, x)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("stride", [2, 3, 4, 8])
def test_wnconv_transpose1d_matches_torch(stride):
    cin, cout, kernel, padding = 6, 5, 2 * stride, math.ceil(stride / 2)
    ref = _randomised_torch(torch.nn.ConvTranspose1d(cin, cout, kernel, stride=stride, padding=padding), 2)
    # torch's weight norm of a transposed conv keeps g per *input* channel
    assert tuple(ref.weight_g.shape) == (cin, 1, 1)
    x = np.random.default_rng(3).standard_normal((2, 11, cin)).astype(np.float32)
    params = {"params": {"weight_v": ref.weight_v.detach().numpy().transpose(2, 0, 1),
                         "weight_g": ref.weight_g.detach().numpy().reshape(-1),
                         "bias": ref.bias.detach().numpy()}}
    conv = WNConvTranspose1d(cout, kernel, stride=stride, padding=padding)
    ours = np.asarray(conv.apply(params, jnp.asarray(x)))
    expected = _run_torch(ref, x)
    assert ours.shape == expected.shape == (2, 11 * stride + kernel - 2 * padding - stride, cout)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-5)


def test_weight_norm_init_equals_v_and_torch_bounds():
    x = jnp.zeros((1, 16, 12))
    conv = WNConv1d(20, 7)
    variables = nn.unbox(conv.init(jax.random.key(0), x))["params"]
    v, g = np.asarray(variables["weight_v"]), np.asarray(variables["weight_g"])
    assert v.shape == (7, 12, 20) and g.shape == (20,)
    np.testing.assert_allclose(g, np.sqrt((v ** 2).sum(axis=(0, 1))), rtol=1e-6)  # W == v at init
    bound = 1 / math.sqrt(12 * 7)  # PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(v).max() <= bound and np.abs(v).max() > 0.8 * bound
    assert np.abs(np.asarray(variables["bias"])).max() <= bound

    convt = WNConvTranspose1d(20, 8, stride=4, padding=2)
    tv = nn.unbox(convt.init(jax.random.key(1), x))["params"]
    assert tv["weight_g"].shape == (12,)  # per input channel
    np.testing.assert_allclose(tv["weight_g"], np.sqrt((np.asarray(tv["weight_v"]) ** 2).sum(axis=(0, 2))),
                               rtol=1e-6)
    assert np.abs(np.asarray(tv["weight_v"])).max() <= 1 / math.sqrt(20 * 8)  # torch: fan-in from out channels


def test_weight_norm_scales_with_g():
    x = jax.random.normal(jax.random.key(0), (1, 10, 3))
    conv = WNConv1d(4, 3, use_bias=False)
    params = nn.unbox(conv.init(jax.random.key(1), x))
    doubled = jax.tree_util.tree_map(lambda a: a, params)
    doubled["params"]["weight_g"] = params["params"]["weight_g"] * 2
    np.testing.assert_allclose(conv.apply(doubled, x), 2 * conv.apply(params, x), rtol=1e-5)
    scaled_v = jax.tree_util.tree_map(lambda a: a, params)
    scaled_v["params"]["weight_v"] = params["params"]["weight_v"] * 5  # direction only: no effect
    np.testing.assert_allclose(conv.apply(scaled_v, x), conv.apply(params, x), rtol=1e-5)


def test_transpose_padding_too_large_is_an_error():
    with pytest.raises(ValueError, match="padding 5 exceeds kernel_size - 1"):
        WNConvTranspose1d(4, 4, stride=2, padding=5).init(jax.random.key(0), jnp.zeros((1, 4, 2)))


def test_snake_beta_formula_and_params():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 4)).astype(np.float32) * 3
    log_a, log_b = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    expected = x + 1.0 / (np.exp(log_b) + 1e-9) * np.sin(np.exp(log_a) * x) ** 2
    ours = SnakeBeta().apply({"params": {"alpha": log_a, "beta": log_b}}, jnp.asarray(x))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    init = nn.unbox(SnakeBeta().init(jax.random.key(0), jnp.asarray(x)))["params"]
    assert set(init) == {"alpha", "beta"} and not np.any(init["alpha"]) and not np.any(init["beta"])


def test_snake_beta_keeps_dtype_and_computes_in_float32():
    """bfloat16 in, bfloat16 out, the sine computed in float32 in between: the result is the float32 result on the
    same (bfloat16) inputs, rounded once. A bfloat16 computation is not (its sine of a large argument is off)."""
    x16 = jnp.linspace(-40, 40, 64, dtype=jnp.float32).reshape(1, 32, 2).astype(jnp.bfloat16)
    a, b = jnp.array([0.5, -0.2]), jnp.array([0.1, 0.3])
    y16 = snake_beta(x16, a, b)
    assert y16.dtype == jnp.bfloat16
    rounded_once = np.asarray(snake_beta(x16.astype(jnp.float32), a, b).astype(jnp.bfloat16), np.float32)
    np.testing.assert_allclose(np.asarray(y16, np.float32), rounded_once, rtol=2 ** -8, atol=0)
    alpha, inverse_beta = jnp.exp(a).astype(jnp.bfloat16), (1 / (jnp.exp(b) + 1e-9)).astype(jnp.bfloat16)
    in_bf16 = np.asarray(x16 + inverse_beta * jnp.sin(alpha * x16) ** 2, np.float32)  # every op in bfloat16
    assert np.abs(in_bf16 - rounded_once).max() > 2 ** -8 * np.abs(rounded_once).max()
