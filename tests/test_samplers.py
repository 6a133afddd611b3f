"""Samplers on a problem with a known answer: Gaussian data x0 ~ N(mu, s^2), whose denoiser, epsilon and flow
velocity are exact in closed form, so the probability-flow ODE's solution is known. Deterministic samplers must
converge to it at their order; stochastic ones must produce the data distribution."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stableaudio_jax.diffusion.objectives import ddpm_alphas_cumprod
from stableaudio_jax.diffusion.samplers import SAMPLERS, sample
from stableaudio_jax.diffusion.schedules import loglinear_sigmas, rectified_flow_timesteps, t_to_sigma

MU, S = 0.3, 0.5


def exact_v_model(x_in, t):
    sigma = t_to_sigma(t)[:, None, None]
    c_in = 1 / jnp.sqrt(sigma ** 2 + 1)
    x = x_in / c_in
    denoised = MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)
    return (denoised - x / (sigma ** 2 + 1)) / (-sigma * c_in)


ABAR = ddpm_alphas_cumprod(1000, "linear")


def exact_eps_model(x, t):
    ab = jnp.asarray(ABAR, jnp.float32)[jnp.round(t * 1000).astype(jnp.int32)][:, None, None]
    return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * MU) / (ab * S ** 2 + 1 - ab)


def exact_flow_model(x, t):
    t = t[:, None, None]
    var = (1 - t) ** 2 * S ** 2 + t ** 2
    centred = x - (1 - t) * MU
    return t / var * centred - (MU + (1 - t) * S ** 2 / var * centred)


NOISE = jax.random.normal(jax.random.key(0), (2, 256, 4))


def _run(model, objective, sampler, steps, **kw):
    fn = jax.jit(lambda noise, key: sample(model, noise, key, objective=objective, sampler=sampler, steps=steps,
                                           **kw))
    return fn(NOISE, jax.random.key(1))


def _rates(errors):
    return np.log2(np.array(errors[:-1]) / np.array(errors[1:]))


@pytest.mark.parametrize("sampler,order", [("ddim", 1), ("dpmpp-2m", 2)])
def test_v_samplers_converge_at_their_order(sampler, order):
    sigma_max, sigma_min = 10.0, 1e-3  # the final jump from sigma_min returns D, ~1e-7 from the ODE's endpoint
    exact = MU + (NOISE * sigma_max - MU) * S / np.sqrt(S ** 2 + sigma_max ** 2)
    errors = [float(jnp.abs(_run(exact_v_model, "v", sampler, n, sigma_min=sigma_min, sigma_max=sigma_max)
                            - exact).max()) for n in (16, 32, 64, 128)]
    assert np.all(_rates(errors)[1:] > order - 0.15), (errors, _rates(errors))


@pytest.mark.parametrize("sampler", ["dpmpp-2m-sde", "dpmpp-3m-sde"])
def test_v_sde_samplers_draw_the_data_distribution(sampler):
    noise = jax.random.normal(jax.random.key(3), (16, 256, 8))
    out = jax.jit(lambda n: sample(exact_v_model, n, jax.random.key(4), objective="v", sampler=sampler, steps=100,
                                   sigma_min=0.01, sigma_max=100.0))(noise)
    assert abs(float(out.mean()) - MU) < 0.01 and abs(float(out.std()) - S) < 0.01
    # and not merely the deterministic path: the stochastic result differs from DPM++ 2M's
    ode = jax.jit(lambda n: sample(exact_v_model, n, jax.random.key(4), objective="v", sampler="dpmpp-2m",
                                   steps=100, sigma_min=0.01, sigma_max=100.0))(noise)
    assert float(jnp.abs(out - ode).mean()) > 0.05


def test_ddpm_ancestral_draws_the_data_distribution():
    noise = jax.random.normal(jax.random.key(5), (16, 256, 8))
    out = jax.jit(lambda n: sample(exact_eps_model, n, jax.random.key(6), objective="eps", sampler="ddpm",
                                   steps=1000))(noise)
    assert abs(float(out.mean()) - MU) < 0.01 and abs(float(out.std()) - S) < 0.01


def test_eps_ddim_converges_at_first_order():
    ab0 = float(ABAR[-1])
    sigma0 = np.sqrt((1 - ab0) / ab0)
    exact = MU + (NOISE / np.sqrt(ab0) - MU) * S / np.sqrt(S ** 2 + sigma0 ** 2)
    errors = [float(jnp.abs(_run(exact_eps_model, "eps", "ddim", n) - exact).max()) for n in (50, 100, 200)]
    assert np.all(_rates(errors) > 0.85), (errors, _rates(errors))


def test_rectified_flow_euler_converges():
    errors = []
    for n in (16, 32, 64, 128):
        # the grid ends with a jump from t_L = sigmoid(-2 + 8/n) to 0, where Euler returns E[x0 | x_tL]:
        # the exact answer is the flow (affine in the noise) to t_L, then that posterior mean
        t_last = float(rectified_flow_timesteps(n)[-2])
        var = (1 - t_last) ** 2 * S ** 2 + t_last ** 2
        x_last = (1 - t_last) * MU + np.sqrt(var) * NOISE
        exact = MU + (1 - t_last) * S ** 2 / var * (x_last - (1 - t_last) * MU)
        errors.append(float(jnp.abs(_run(exact_flow_model, "rectified_flow", "euler", n) - exact).max()))
    assert np.all(_rates(errors)[1:] > 0.85), (errors, _rates(errors))  # first order once asymptotic


def test_schedules():
    sigmas = np.asarray(loglinear_sigmas(100, 0.3, 500.0))
    assert sigmas.shape == (101,) and sigmas[-1] == 0 and np.isclose(sigmas[0], 500) and np.isclose(sigmas[99], 0.3)
    assert np.allclose(np.diff(np.log(sigmas[:-1])), np.log(0.3 / 500) / 99)
    ts = np.asarray(rectified_flow_timesteps(10))
    assert ts[0] == 1.0 and ts[-1] == 0.0 and np.all(np.diff(ts) < 0)
    assert np.isclose(ts[-2], 1 / (1 + np.exp(2 - 8 / 10)), rtol=1e-5)  # logSNR spaced from -6 to 2


@pytest.mark.parametrize("objective,sampler", [(o, s) for o, names in SAMPLERS.items() for s in names])
def test_inpainting_keeps_the_known_region(objective, sampler):
    model = {"v": exact_v_model, "eps": exact_eps_model, "rectified_flow": exact_flow_model}[objective]
    known = jnp.full(NOISE.shape, 2.0)
    mask = (jnp.arange(NOISE.shape[1]) < 100).astype(jnp.float32)[None].repeat(2, 0)
    out = jax.jit(lambda n: sample(model, n, jax.random.key(2), objective=objective, sampler=sampler, steps=20,
                                   sigma_min=0.3, sigma_max=80.0, inpaint_latents=known, inpaint_mask=mask))(NOISE)
    np.testing.assert_allclose(out[:, :100], 2.0, atol=1e-5)
    assert abs(float(out[:, 100:].mean()) - MU) < 0.15  # the rest is generated


def test_audio_to_audio_starts_from_the_init():
    init = jnp.full(NOISE.shape, -1.0)
    near = _run(exact_v_model, "v", "dpmpp-2m", 20, sigma_min=0.001, init_latents=init, init_noise_level=0.01)
    far = _run(exact_v_model, "v", "dpmpp-2m", 20, sigma_min=0.3, init_latents=init, init_noise_level=500.0)
    assert float(jnp.abs(near - init).max()) < 0.05  # a little noise: the init survives
    assert abs(float(far.mean()) - MU) < 0.1  # full noise: the init is forgotten


def test_bad_sampler_names():
    with pytest.raises(ValueError, match=r"sampler 'euler' is not available for the 'v' objective"):
        sample(exact_v_model, NOISE, jax.random.key(0), objective="v", sampler="euler", steps=2)
    with pytest.raises(ValueError, match=r"objective 'x0'"):
        sample(exact_v_model, NOISE, jax.random.key(0), objective="x0", sampler="euler", steps=2)


def test_pingpong_is_the_hand_computed_two_step_result():
    """Denoise in one jump (x0 = x - t v), re-noise to the next time with fresh noise, and return x0 at the end."""
    def model(x, t):
        return 0.5 * x + t[:, None, None]
    ts = np.asarray(rectified_flow_timesteps(2))
    got = _run(model, "rectified_flow", "pingpong", 2)
    x, key = NOISE, jax.random.key(1)
    for i in range(2):
        key, k_key = jax.random.split(key)
        x0 = x - ts[i] * (0.5 * x + ts[i])
        x = (1 - ts[i + 1]) * x0 + ts[i + 1] * jax.random.normal(jax.random.fold_in(k_key, 1), x.shape)
    np.testing.assert_allclose(got, x, atol=1e-5)
    np.testing.assert_allclose(got, x0, atol=1e-5)  # the last step returns the denoised estimate itself
    # one step from pure noise is the posterior mean of x0: the data mean, for the exact flow of N(MU, S^2)
    np.testing.assert_allclose(_run(exact_flow_model, "rectified_flow", "pingpong", 1), MU, atol=1e-5)
