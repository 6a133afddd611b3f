"""Stable Audio 3's variable-length generation: lengths and masks as the reference computes them, length buckets
that change nothing in the generated frames, inpainting inputs, and the bad-input errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.inference import sa3
from stableaudio_jax.models.sa3_dit import sa3_dit_from_config

TINY = dict(sample_rate=1000, downsampling_ratio=64, padding_seconds=0.256, max_frames=64)  # 4 padding frames


def test_lengths_follow_the_duration_as_the_reference_computes_them():
    """30 s: 36 s with the padding → 388 frames, 387 of them valid (the reference's example); the bucket is 512;
    120 s is the Small models' whole length (the padding squeezed out)."""
    exact = sa3.latent_lengths([30.0], buckets=None)
    assert (exact.frames, exact.valid.tolist(), exact.samples.tolist()) == (388, [387], [1323000])
    mixed = sa3.latent_lengths([10.0, 30.0])
    assert (mixed.frames, mixed.valid.tolist()) == (512, [172, 387])
    longest = sa3.latent_lengths([120.0])
    assert (longest.frames, longest.valid.tolist()) == (1292, [1292])


@pytest.mark.parametrize("seconds", [[0.0], [121.0], [5.0, -1.0], []])
def test_a_duration_the_model_cannot_make_is_refused(seconds):
    with pytest.raises(ValueError, match=r"expected seconds in \(0, 119.99\]|expected seconds in \(0, 120.00\]"):
        sa3.latent_lengths(seconds)


def test_inpainting_regions_become_a_frame_mask_and_the_local_conditioning():
    keep = sa3.keep_mask_from_seconds([(0.5, 1.0)], 1.5, frames=32, sample_rate=1000, downsampling_ratio=64)
    frame_starts = np.arange(32) * 64 / 1000
    expected = ~((frame_starts >= 0.5) & (frame_starts < 1.0)) & (frame_starts < 1.5)
    np.testing.assert_array_equal(keep, expected.astype(np.float32))
    latents = jnp.arange(2 * 32 * 3, dtype=jnp.float32).reshape(2, 32, 3)
    local = sa3.inpainting_conditioning(latents, jnp.broadcast_to(jnp.asarray(keep), (2, 32)))
    np.testing.assert_array_equal(np.asarray(local[..., 0]), np.broadcast_to(keep, (2, 32)))
    np.testing.assert_array_equal(np.asarray(local[..., 1:]), np.asarray(latents) * keep[None, :, None])
    with pytest.raises(ValueError, match=r"inpainting region \(1.0, 2.0\) s: expected .* 1.50 s"):
        sa3.keep_mask_from_seconds([(1.0, 2.0)], 1.5, frames=32, sample_rate=1000, downsampling_ratio=64)


def _random_tiny_dit(padding: str):
    """configs/sa3.py:tiny with every parameter random: the zero-initialised branches would otherwise hide
    whether padded frames reach the valid ones."""
    model = sa3_dit_from_config(load_config("sa3.py:tiny").model).clone(padding=padding)
    shapes = (jnp.zeros((1, 8, 8)), jnp.zeros((1,)), jnp.zeros((1, 3, 16)), jnp.zeros((1, 16)))
    params = model.init(jax.random.key(0), *shapes)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [jax.random.normal(k, x.shape) * 0.1 for k, x in zip(keys, leaves)])
    return lambda *a: model.apply(params, *a)


@pytest.mark.parametrize("padding,same", [("exclude", True), ("zero_values", False)])
def test_a_length_bucket_changes_nothing_in_the_valid_frames(padding, same):
    """Clips of 1.0 s and 0.5 s: 20 frames exactly, 24 in a bucket. Guided (CFG 3 with APG) Euler from the same
    noise on the valid frames gives the same latents there when padded keys are excluded; with the reference's
    CPU semantics (values zeroed, keys kept) the padding leaks in."""
    apply_fn = _random_tiny_dit(padding)
    exact = sa3.latent_lengths([1.0, 0.5], buckets=None, **TINY)
    bucketed = sa3.latent_lengths([1.0, 0.5], buckets=(24, 32), **TINY)
    assert (exact.frames, bucketed.frames, exact.valid.tolist()) == (20, 24, [20, 12])
    noise = jax.random.normal(jax.random.key(2), (2, 24, 8))
    cross, global_cond = jax.random.normal(jax.random.key(3), (2, 3, 16)), jax.random.normal(jax.random.key(4), (2, 16))

    def run(lengths):
        mask = sa3.padding_mask(lengths.valid, lengths.frames)
        return np.asarray(jax.jit(lambda n: sa3.generate_latents(
            apply_fn, n, jax.random.key(5), cross, global_cond, mask, steps=4, sampler="euler", cfg_scale=3.0,
            guided=True))(noise[:, :lengths.frames]))

    a, b = run(exact), run(bucketed)
    gaps = [np.abs(a[i, :n] - b[i, :n]).max() for i, n in enumerate(exact.valid)]
    assert (max(gaps) < 1e-5) == same and (same or max(gaps) > 1e-3), gaps


def test_trimmed_audio_is_silent_past_the_valid_frames_and_cut_to_the_request():
    lengths = sa3.latent_lengths([0.2, 0.5], buckets=None, **TINY)
    audio = np.full((2, lengths.frames * 64, 2), 3.0, np.float32)
    clips = sa3.trim_audio(audio, lengths, downsampling_ratio=64)
    assert [c.shape for c in clips] == [(200, 2), (500, 2)]
    assert np.all(clips[1] == 1.0)  # clipped to [-1, 1]; 0.5 s + 4 frames is past the cut
    short = sa3.latent_lengths([0.05], buckets=None, **TINY)  # 1 + 4 frames valid of 8: 320 samples kept
    kept = sa3.trim_audio(np.ones((1, short.frames * 64, 1), np.float32), short, downsampling_ratio=64)[0]
    assert kept.shape == (50, 1) and np.all(kept == 1.0)
