"""The Stable Audio Open DiT: exact size, parity with diffusers' StableAudioDiTModel (with and without the CFG
batch), the stable-audio-tools key layout, scan/remat/attention options and input errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import (TINY_DIFFUSERS_DIT, diffusers_dit_forward, dit_inputs, dit_state_to_sat, model_config,
                     randomized_diffusers_dit)

from stableaudio_jax.convert import (dit_config_from_diffusers, dit_config_from_stable_audio_tools,
                                     dit_params_from_state_dict)
from stableaudio_jax.convert.dit import stack_blocks, unstack_blocks
from stableaudio_jax.convert.stable_audio import BoundDiT
from stableaudio_jax.models.autoencoder import count_params
from stableaudio_jax.models.dit import dit_from_config, guided


def _abstract(dit, frames=8, tokens=5):
    args = (jax.ShapeDtypeStruct((1, frames, dit.io_channels), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.float32),
            jax.ShapeDtypeStruct((1, tokens, dit.cond_token_dim), jnp.float32),
            jax.ShapeDtypeStruct((1, dit.global_cond_dim), jnp.float32))
    return jax.eval_shape(lambda *a: dit.init(jax.random.key(0), *a), *args)


@pytest.mark.parametrize("scan", [False, True])
def test_sao_parameter_count(scan):
    dit = dit_from_config(dict(model_config("configs/dit.py:sao"), scan_layers=scan))
    assert count_params(_abstract(dit)) == 1_056_828_544
    assert dit.head_dim == 64 and dit._block_kwargs()["kv_heads"] == 12  # GQA: 24 query heads on 12 kv heads


@pytest.fixture(scope="module")
def reference():
    model = randomized_diffusers_dit()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return model, state


def _ours(state, **overrides):
    dit = dit_from_config(dict(dit_config_from_diffusers(TINY_DIFFUSERS_DIT), **overrides))
    return dit, dit_params_from_state_dict(state, dit, "diffusers")


def test_parity_with_diffusers(reference):
    model, state = reference
    dit, params = _ours(state)
    x, t, cross, g = dit_inputs()
    expected = diffusers_dit_forward(model, x, t, cross, g)
    ours = np.asarray(jax.jit(dit.apply)(params, x, t, cross, g))
    assert ours.shape == x.shape and np.abs(ours - expected).max() <= 1e-4
    assert np.abs(expected).max() > 1.0


@pytest.mark.parametrize("scale_phi", [0.0, 0.7])
def test_parity_with_the_cfg_batch(reference, scale_phi):
    model, state = reference
    dit, params = _ours(state)
    x, t, cross, g = dit_inputs(seed=1)
    # the reference's batched guidance: [cond; zeros] in one call, uncond + (cond - uncond) * scale
    both = diffusers_dit_forward(model, np.concatenate([x, x]), np.concatenate([t, t]),
                                 np.concatenate([cross, np.zeros_like(cross)]), np.concatenate([g, g]))
    cond, uncond = torch.from_numpy(both[:2]), torch.from_numpy(both[2:])
    cfg = uncond + (cond - uncond) * 6.5
    if scale_phi:  # CFG rescale, torch.std (unbiased) over the channel axis
        cfg = scale_phi * cfg * (cond.std(dim=-1, keepdim=True) / cfg.std(dim=-1, keepdim=True)) + (1 - scale_phi) * cfg
    ours = BoundDiT(dit, params)(x, t, cross, g, cfg_scale=6.5, scale_phi=scale_phi)
    assert np.abs(np.asarray(ours) - cfg.numpy()).max() <= 1e-4
    batched = np.asarray(jax.jit(dit.apply)(params, np.concatenate([x, x]), np.concatenate([t, t]),
                                            np.concatenate([cross, np.zeros_like(cross)]), np.concatenate([g, g])))
    assert np.abs(batched - both).max() <= 1e-4


def test_stable_audio_tools_layout(reference):
    model, state = reference
    sat = dit_state_to_sat(state)
    assert sat["transformer.layers.0.self_attn.to_qkv.weight"].shape == (768, 256)
    dit = dit_from_config(dict(dit_config_from_diffusers(TINY_DIFFUSERS_DIT)))
    params = dit_params_from_state_dict(sat, dit, "stable-audio-tools")
    x, t, cross, g = dit_inputs(seed=2)
    ours = np.asarray(jax.jit(dit.apply)(params, x, t, cross, g))
    assert np.abs(ours - diffusers_dit_forward(model, x, t, cross, g)).max() <= 1e-4


def test_norm_bias_is_kept_only_when_asked():
    model = randomized_diffusers_dit(seed=3, zero_norm_bias=False)
    sat = dit_state_to_sat({k: v.numpy() for k, v in model.state_dict().items()})
    plain = dit_from_config(dit_config_from_diffusers(TINY_DIFFUSERS_DIT))
    with pytest.raises(ValueError, match=r"LayerNorm biases .*pre_norm.beta.* are non-zero; load with "
                                         r"config.model.norm_bias=True"):
        dit_params_from_state_dict(sat, plain, "stable-audio-tools")
    biased = plain.clone(norm_bias=True)
    params = dit_params_from_state_dict(sat, biased, "stable-audio-tools")
    x, t, cross, g = dit_inputs(seed=4)
    assert np.abs(np.asarray(biased.apply(params, x, t, cross, g)) - diffusers_dit_forward(
        model, x, t, cross, g)).max() <= 1e-4


def test_scan_remat_and_attention_options_agree(reference):
    _, state = reference
    x, t, cross, g = dit_inputs(seed=5)
    base, base_params = _ours(state)

    def loss(dit, p):
        return jnp.mean(jnp.square(dit.apply(p, x, t, cross, g)))

    want, want_grad = jax.jit(jax.value_and_grad(lambda p: loss(base, p)))(base_params)
    for overrides in [dict(scan_layers=True), dict(scan_layers=True, remat="full"), dict(remat="dots"),
                      dict(attention_impl="xla")]:
        dit, params = _ours(state, **overrides)
        got, grad = jax.jit(jax.value_and_grad(lambda p: loss(dit, p)))(params)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        if overrides.get("scan_layers"):
            grad = {"params": unstack_blocks(grad["params"])}
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), grad, want_grad)
    stacked = stack_blocks(base_params["params"], 2)
    assert stacked["blocks"]["ff"]["proj"]["kernel"].shape == (2, 256, 2, 1024)


def test_pallas_flash_attention_matches(reference):
    """The TPU flash-attention kernel (run by Pallas' TPU interpreter on this CPU): the same loss and gradients as
    the einsum path, with padded tiles, grouped key/value heads and the cross-attention mask."""
    from jax.experimental.pallas import tpu as pltpu
    _, state = reference
    x, t, cross, g = dit_inputs(seed=6)
    base, base_params = _ours(state)
    flash, params = _ours(state, attention_impl="flash")

    def loss(dit, p):
        return jnp.mean(jnp.square(dit.apply(p, x, t, cross, g)))

    want, want_grad = jax.jit(jax.value_and_grad(lambda p: loss(base, p)))(base_params)
    with pltpu.force_tpu_interpret_mode():
        # Jitted: run op by op, the interpreter's callbacks dispatch eagerly beside the main thread and can deadlock.
        got, grad = jax.jit(jax.value_and_grad(lambda p: loss(flash, p)))(params)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), grad, want_grad)


def test_bfloat16_compute_tracks_float32(reference):
    _, state = reference
    x, t, cross, g = dit_inputs(seed=6)
    f32, params = _ours(state)
    bf16 = f32.clone(dtype=jnp.bfloat16)
    a = np.asarray(jax.jit(f32.apply)(params, x, t, cross, g))
    b = np.asarray(jax.jit(bf16.apply)(params, x, t, cross, g))
    assert b.dtype == np.float32 and np.linalg.norm(a - b) / np.linalg.norm(a) < 3e-2


def test_a_fresh_dit_is_project_out_of_project_in_and_trainable():
    """The reference zero-initialises the pre/post-processing convs and every residual branch's output layer, so
    a fresh DiT is exactly ``project_out(project_in(x))``: the blocks, timestep and conditioning add nothing yet."""
    dit = dit_from_config(model_config("configs/dit.py:tiny"))
    x = jax.random.normal(jax.random.key(0), (2, 6, 4))
    t, cross, g = jnp.array([0.2, 0.9]), jnp.ones((2, 5, 32)), jnp.ones((2, 64))
    params = jax.jit(lambda k: nn.unbox(dit.init(k, x, t, cross, g)))(jax.random.key(1))
    out = np.asarray(jax.jit(dit.apply)(params, x, t, cross, g))
    p = params["params"]
    dense = lambda layer, h: h @ np.asarray(layer["kernel"]) + np.asarray(layer.get("bias", 0.0))  # noqa: E731
    expected = dense(p["project_out"], dense(p["project_in"], np.asarray(x)))
    assert np.abs(expected).max() > 0.1  # a real signal, not two zeros
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    other = np.asarray(jax.jit(dit.apply)(params, x, 1 - t, -cross, -g))
    np.testing.assert_allclose(other, out, rtol=1e-5, atol=1e-5)  # conditioning does not reach the output yet
    grads = jax.jit(jax.grad(lambda p: jnp.sum(dit.apply(p, x, t, cross, g) ** 2)))(params)
    assert float(jnp.abs(grads["params"]["project_in"]["kernel"]).max()) > 0


@pytest.mark.parametrize("bad,message", [
    ({"x": np.zeros((2, 6, 5))}, r"x has shape \(2, 6, 5\); expected rank 3 with last dim 4"),
    ({"cross": np.zeros((2, 5, 31))}, r"cross_attn_cond has shape \(2, 5, 31\)"),
    ({"g": np.zeros((2, 1, 64))}, r"global_cond has shape \(2, 1, 64\); expected rank 2"),
    ({"t": np.zeros((3,))}, r"t has shape \(3,\); expected \(2,\)"),
])
def test_bad_inputs_are_clear_errors(bad, message):
    dit = dit_from_config(model_config("configs/dit.py:tiny"))
    args = dict(x=np.zeros((2, 6, 4)), t=np.zeros(2), cross=np.zeros((2, 5, 32)), g=np.zeros((2, 64)))
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda: dit.init(jax.random.key(0), args["x"], args["t"], args["cross"], args["g"]))


def test_sat_config_support():
    sao = {"model": {"diffusion": {"type": "dit", "config": {
        "io_channels": 64, "embed_dim": 1536, "depth": 24, "num_heads": 24, "cond_token_dim": 768,
        "global_cond_dim": 1536, "project_cond_tokens": False, "transformer_type": "continuous_transformer"}}}}
    cfg = dit_config_from_stable_audio_tools(sao)
    ours = model_config("configs/dit.py:sao")
    for key in ("io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim", "global_cond_dim"):
        assert cfg[key] == ours[key]
    assert cfg.cond_embed_dim == 768
    sao["model"]["diffusion"]["config"]["global_cond_type"] = "adaLN"
    with pytest.raises(ValueError, match=r"global_cond_type='adaLN' is not supported"):
        dit_config_from_stable_audio_tools(sao)
    del sao["model"]["diffusion"]["config"]["global_cond_type"]
    sao["model"]["diffusion"]["config"]["qk_norm"] = "ln"
    with pytest.raises(ValueError, match=r"model.diffusion.config.qk_norm is not supported"):
        dit_config_from_stable_audio_tools(sao)


def test_guided_is_traceable_in_the_scale(reference):
    _, state = reference
    dit, params = _ours(state)
    x, t, cross, g = dit_inputs(seed=7)
    fn = jax.jit(lambda s: guided(lambda *a: dit.apply(params, *a), x, t, cross, g, s))
    a, b = fn(1.0), fn(3.0)
    cond = dit.apply(params, x, t, cross, g)
    np.testing.assert_allclose(a, cond, atol=1e-5)  # scale 1 is the conditional prediction
    assert float(jnp.abs(b - a).max()) > 1e-3 and fn._cache_size() == 1
