"""Training objectives: the noising equations, targets, timestep samplers and the masked loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stableaudio_jax.diffusion.objectives import (diffusion_loss, ddpm_alphas_cumprod, noisy_example,
                                                  sample_timesteps)
from stableaudio_jax.diffusion.schedules import ddpm_betas

X0 = jax.random.normal(jax.random.key(0), (8, 16, 4))


def _eps(rng):  # the noise noisy_example draws for this rng
    return jax.random.normal(jax.random.split(rng)[1], X0.shape)


def test_v_objective():
    rng = jax.random.key(1)
    ex = noisy_example(rng, X0, "v", "uniform")
    eps = _eps(rng)
    alpha, sigma = np.cos(np.pi * ex.t / 2)[:, None, None], np.sin(np.pi * ex.t / 2)[:, None, None]
    np.testing.assert_allclose(ex.x_t, alpha * X0 + sigma * eps, atol=1e-5)
    np.testing.assert_allclose(ex.target, alpha * eps - sigma * X0, atol=1e-5)
    # the reference's reconstructions hold: x0 = alpha x_t - sigma v, eps = sigma x_t + alpha v
    np.testing.assert_allclose(alpha * ex.x_t - sigma * ex.target, X0, atol=1e-5)


def test_rectified_flow_objective():
    rng = jax.random.key(2)
    ex = noisy_example(rng, X0, "rectified_flow", "logit_normal")
    eps, t = _eps(rng), np.asarray(ex.t)[:, None, None]
    np.testing.assert_allclose(ex.x_t, (1 - t) * X0 + t * eps, atol=1e-5)
    np.testing.assert_allclose(ex.target, eps - X0, atol=1e-5)


def test_eps_objective_ddpm():
    rng = jax.random.key(3)
    abar = ddpm_alphas_cumprod(1000, "linear")
    ex = noisy_example(rng, X0, "eps", "uniform", abar)
    step = np.round(np.asarray(ex.t) * 1000).astype(int)
    ab = abar[step][:, None, None]
    np.testing.assert_allclose(ex.x_t, np.sqrt(ab) * X0 + np.sqrt(1 - ab) * _eps(rng), atol=1e-5)
    np.testing.assert_allclose(ex.target, _eps(rng), atol=1e-6)
    assert np.isclose(ddpm_betas(1000, "linear")[0], 1e-4) and np.isclose(ddpm_betas(1000, "linear")[-1], 0.02)
    cosine = ddpm_alphas_cumprod(1000, "cosine")
    assert 0.99 < cosine[0] <= 1 and cosine[-1] < 1e-3 and np.all(np.diff(cosine) < 0)


@pytest.mark.parametrize("kind", ["uniform", "low_discrepancy", "logit_normal", "log_snr"])
def test_timestep_samplers(kind):
    t = np.asarray(sample_timesteps(jax.random.key(4), 4096, kind))
    assert t.shape == (4096,) and t.min() >= 0 and t.max() < 1
    if kind in ("uniform", "low_discrepancy"):
        assert abs(t.mean() - 0.5) < 0.02
    if kind == "low_discrepancy":  # stratified: exactly one draw per 1/B interval
        assert np.array_equal(np.sort(np.floor(t * 4096)), np.arange(4096))
    if kind == "logit_normal":
        assert abs(np.median(t) - 0.5) < 0.03
    with pytest.raises(ValueError, match="timestep sampler 'sobol'"):
        sample_timesteps(jax.random.key(0), 4, "sobol")


def test_masked_loss_counts_only_valid_frames():
    pred, target = jnp.ones((2, 4, 3)), jnp.zeros((2, 4, 3))
    mask = jnp.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
    pred = pred.at[0, 2:].set(100.0)  # errors on padded frames must not count
    assert float(diffusion_loss(pred, target, mask)) == 1.0
    assert float(diffusion_loss(jnp.ones((2, 4, 3)), target)) == 1.0
    with pytest.raises(ValueError, match="objective 'x0'"):
        noisy_example(jax.random.key(0), X0, "x0")
