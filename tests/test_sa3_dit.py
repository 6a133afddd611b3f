"""Stable Audio 3's DiT against the reference code: tests/data/sa3_dit_reference.npz holds two small random
configurations built from it (benchmarks/make_sa3_dit_reference.py: Small's layout on two heads, Medium's with
differential attention and partial rotary), inputs with inpainting conditioning and a padding mask, and the
reference's outputs without the mask, with its CPU semantics (values at padded keys zeroed) and with its flash-attn
varlen semantics (each clip alone on its valid frames)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stableaudio_jax.convert.sa3_dit import sa3_dit_params_from_state_dict
from stableaudio_jax.convert.state_dict import CheckpointMismatchError
from stableaudio_jax.models import sa3_dit

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "sa3_dit_reference.npz")


@pytest.fixture(scope="module")
def reference():
    data = np.load(FIXTURE)
    meta = json.loads(str(data["configs"]))
    return data, meta["configs"], meta["valid"]


def _ours(config: dict, **changes) -> sa3_dit.SA3DiT:
    fields = dict(io_channels=config["io_channels"], embed_dim=config["embed_dim"], depth=config["depth"],
                  num_heads=config["num_heads"], cond_token_dim=config["cond_token_dim"],
                  global_cond_dim=config["global_cond_dim"], local_cond_dim=config["local_add_cond_dim"],
                  num_memory_tokens=config["num_memory_tokens"], ff_mult=config["ff_mult"],
                  differential=config["differential"])
    return sa3_dit.SA3DiT(**(fields | changes))


def _case(data, name):
    prefix = f"{name}/state/"
    state = {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}
    given = {k: data[f"{name}/in/{k}"] for k in ("x", "t", "cross", "global_embed", "local", "padding_mask")}
    channels_last = lambda a: jnp.asarray(a).transpose(0, 2, 1)  # noqa: E731
    args = (channels_last(given["x"]), jnp.asarray(given["t"]), jnp.asarray(given["cross"]),
            jnp.asarray(given["global_embed"]))
    return state, args, channels_last(given["local"]), jnp.asarray(given["padding_mask"])


def _run(model, variables, args, local, mask=None):
    return np.asarray(jax.jit(lambda v, *a: model.apply(v, *a))(variables, *args, local, mask)).transpose(0, 2, 1)


@pytest.mark.parametrize("name", ["small", "medium"], ids=["Small layout", "Medium layout (differential)"])
def test_the_dit_matches_the_reference_with_and_without_a_padding_mask(reference, name):
    data, configs, valid = reference
    state, args, local, mask = _case(data, name)
    for padding, scan in (("exclude", False), ("zero_values", True)):
        model = _ours(configs[name], padding=padding, scan_layers=scan)
        variables = sa3_dit_params_from_state_dict(state, model)
        np.testing.assert_allclose(_run(model, variables, args, local), data[f"{name}/out"], atol=1e-4, rtol=1e-4)
        masked = _run(model, variables, args, local, mask)
        expected = data[f"{name}/out_{padding}"]
        for b, n in enumerate(valid):  # the frames of each clip; what padded frames hold is never used
            np.testing.assert_allclose(masked[b, :, :n], expected[b, :, :n], atol=1e-4, rtol=1e-4)


def test_the_padding_modes_and_inpainting_inputs_change_the_output(reference):
    """The parity above rests on each of them: the two padding semantics give other outputs at valid frames, and so
    does dropping the inpainting conditioning (None means zeros, the reference's text-to-audio input)."""
    data, configs, valid = reference
    state, args, local, mask = _case(data, "small")
    model = _ours(configs["small"])
    variables = sa3_dit_params_from_state_dict(state, model)
    excluded = _run(model, variables, args, local, mask)
    zeroed = _run(model.clone(padding="zero_values"), variables, args, local, mask)
    assert np.abs(excluded[1, :, :valid[1]] - zeroed[1, :, :valid[1]]).max() > 0.1
    without = _run(model, variables, args, None)
    np.testing.assert_allclose(without, _run(model, variables, args, jnp.zeros_like(local)), atol=1e-6)
    assert np.abs(without - data["small/out"]).max() > 0.1


def test_timestep_features_equal_the_reference_up_to_its_float32_frequencies(reference):
    """The reference computes its 128 frequencies in float32 (linspace, product, exp, each rounded); ours are the
    correctly rounded values. They differ by a few ulps (a relative ~1e-6), which moves each feature by at most
    that fraction of its argument ``2 pi t f``: ~1e-5 at low frequencies, up to ~0.05 at frequency 1e4, t = 1."""
    data, _, _ = reference
    t, expected = data["expo/t"], data["expo/features"]
    ours = np.asarray(sa3_dit.expo_fourier_features(jnp.asarray(t), 256))
    freqs = sa3_dit.expo_frequencies(128)
    argument = 2 * np.pi * t[:, None] * np.concatenate([freqs, freqs])[None]
    assert np.all(np.abs(ours - expected) <= 2e-6 * argument + 1e-6)
    assert freqs[0] == np.float32(0.5) and freqs[-1] == np.float32(10000.0)


def test_a_checkpoint_that_does_not_fit_names_every_problem(reference):
    data, configs, _ = reference
    state, *_ = _case(data, "small")
    broken = {k: v for k, v in state.items() if "to_local_embed" not in k}
    broken["transformer.layers.0.to_scale_shift_gate"] = np.zeros(5, np.float32)
    broken["transformer.layers.9.extra"] = np.zeros(1, np.float32)
    with pytest.raises(CheckpointMismatchError) as caught:
        sa3_dit_params_from_state_dict(broken, _ours(configs["small"]))
    message = str(caught.value)
    for part in ("to_local_embed.0.weight", "to_scale_shift_gate", "transformer.layers.9.extra"):
        assert part in message


def test_bad_inputs_are_refused_with_their_shapes(reference):
    _, configs, _ = reference
    model = _ours(configs["small"])
    x, t = jnp.zeros((1, 6, 8)), jnp.zeros((1,))
    cross, g = jnp.zeros((1, 3, 16)), jnp.zeros((1, 16))
    with pytest.raises(ValueError, match=r"padding_mask has shape \(1, 5\); expected \(1, 6\)"):
        jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, cross, g, None, jnp.ones((1, 5), bool)))
    with pytest.raises(ValueError, match=r"local_cond has shape \(1, 6, 8\); expected \(1, 6, 9\)"):
        jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, cross, g, jnp.zeros((1, 6, 8))))
    with pytest.raises(ValueError, match="padding is 'varlen'"):
        jax.eval_shape(lambda: model.clone(padding="varlen").init(jax.random.key(0), x, t, cross, g))


@pytest.mark.parametrize("variant,count,tensors", [("small", 459_130_880, 437), ("medium", 1_453_170_176, 521)])
def test_full_size_configs_have_the_published_shapes(variant, count, tensors):
    """configs/sa3.py's sizes (what its docstring states; the SA3 README's 433 M / 1.4 B leave out the blocks'
    inpainting embedders, 26.2 M / 66.1 M)."""
    import flax.linen as nn
    from stableaudio_jax.config_loader import load_config
    config = load_config(f"sa3.py:{variant}")
    model = sa3_dit.sa3_dit_from_config(config.model).clone(scan_layers=False)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4, 256)), jnp.zeros((1,)),
                                               jnp.zeros((1, 3, 768)), jnp.zeros((1, 768))))
    leaves = jax.tree_util.tree_leaves(nn.unbox(shapes))
    assert (sum(int(np.prod(leaf.shape)) for leaf in leaves), len(leaves)) == (count, tensors)
    local = sum(int(np.prod(leaf.shape)) for path, leaf in jax.tree_util.tree_flatten_with_path(nn.unbox(shapes))[0]
                if "to_local_embed" in jax.tree_util.keystr(path))
    assert round((count - local) / 1e6) == {"small": 433, "medium": 1387}[variant]


def test_the_conditioning_matches_the_reference(reference):
    """The prompt's padded positions become the learned embedding; seconds_total (clamped to [0, 384]: -5 and 500 s
    are outside) becomes one token and the global conditioning; a negative prompt's padding reads as zeros."""
    from stableaudio_jax.convert.sa3_dit import sa3_conditioner_params_from_state_dict
    from stableaudio_jax.models.sa3_conditioning import SA3Conditioner, negative_cross
    data, _, _ = reference
    case = {k[len("conditioner/"):]: data[k] for k in data.files if k.startswith("conditioner/")}
    state = {k[len("state/"):]: v for k, v in case.items() if k.startswith("state/")}
    module = SA3Conditioner(features=case["text"].shape[-1])
    variables = sa3_conditioner_params_from_state_dict(state, module)
    cross, global_cond = module.apply(variables, jnp.asarray(case["text"]), jnp.asarray(case["mask"]),
                                      jnp.asarray(case["seconds"]))
    np.testing.assert_allclose(np.asarray(cross[:, :-1]), case["prompt"], atol=1e-6)
    np.testing.assert_allclose(np.asarray(cross[:, -1:]), case["token"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(global_cond), case["token"][:, 0], atol=1e-5)
    negative = np.asarray(negative_cross(cross, jnp.asarray(case["mask"])))
    assert np.all(negative[1, 2:-1] == 0) and np.array_equal(negative[1, :2], np.asarray(cross[1, :2]))
    np.testing.assert_array_equal(negative[:, -1], np.asarray(cross[:, -1]))


def test_the_sampling_time_grid_is_the_reference_s(reference):
    """``build_schedule`` with the models' default logSNR shift: 8 steps (the post-trained models), 50 (the base
    models) and 4 from t = 0.7 (audio-to-audio: the reference keeps t_max first, above the second time)."""
    from stableaudio_jax.diffusion.schedules import logsnr_shifted_timesteps
    data, _, _ = reference
    for key in (k for k in data.files if k.startswith("schedule/")):
        steps, t_max = key.split("/")[1].split("_")
        np.testing.assert_allclose(np.asarray(logsnr_shifted_timesteps(int(steps), float(t_max))), data[key],
                                   atol=2e-7)
