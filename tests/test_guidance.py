"""Stable Audio 3's guidance (diffusion/guidance.py) against the reference's own ``DiffusionTransformer.forward``
arithmetic: tests/data/sa3_guidance_reference.npz (benchmarks/make_sa3_guidance_reference.py) holds its outputs
for fixed conditional and unconditional predictions, over both objectives, APG off / full / mixed, the norm cap,
CFG-rescale and a padding mask."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stableaudio_jax.diffusion.guidance import apg_project, guided_prediction

FIXTURE = np.load(os.path.join(os.path.dirname(__file__), "data", "sa3_guidance_reference.npz"))
CASES = json.loads(str(FIXTURE["cases"]))["cases"]
LAST = lambda a: jnp.asarray(a).transpose(0, 2, 1)  # noqa: E731  reference [B, C, T] -> ours [B, T, C]


@pytest.mark.parametrize("i", range(len(CASES)), ids=[
    f"{c['objective']} apg {c['apg_scale']} cap {c['cfg_norm_threshold']} phi {c['scale_phi']}"
    f"{' padded' if c['padded'] else ''}" for c in CASES])
def test_guided_prediction_matches_the_reference(i):
    case = CASES[i]
    got = guided_prediction(LAST(FIXTURE["x"]), jnp.asarray(FIXTURE["t"]), LAST(FIXTURE["cond"]),
                            LAST(FIXTURE["uncond"]), case["objective"], case["cfg_scale"], case["apg_scale"],
                            case["cfg_norm_threshold"], case["scale_phi"],
                            jnp.asarray(FIXTURE["padding_mask"]) if case["padded"] else None)
    np.testing.assert_allclose(got, LAST(FIXTURE[f"case{i}"]), atol=2e-5, rtol=2e-5)


def test_scales_may_be_traced_and_apg_removes_the_parallel_part():
    """One compiled function for every scale; the orthogonal part of APG has no component along the conditional
    estimate, and the two parts sum to the whole."""
    x, t, cond, uncond = LAST(FIXTURE["x"]), jnp.asarray(FIXTURE["t"]), LAST(FIXTURE["cond"]), LAST(FIXTURE["uncond"])
    guided = jax.jit(lambda s, a: guided_prediction(x, t, cond, uncond, "rectified_flow", s, a))
    np.testing.assert_allclose(guided(4.5, 0.0), LAST(FIXTURE["case7"]), atol=2e-5, rtol=2e-5)
    assert not np.allclose(guided(4.5, 1.0), guided(4.5, 0.0))
    parallel, orthogonal = apg_project(cond - uncond, cond)
    np.testing.assert_allclose(jnp.sum(orthogonal * cond, axis=(1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(parallel + orthogonal, cond - uncond, atol=1e-5)
    with pytest.raises(ValueError, match=r"objective 'eps'; expected one of"):
        guided_prediction(x, t, cond, uncond, "eps", 2.0)
