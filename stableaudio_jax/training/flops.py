"""Model FLOPs of a training step, the numerator of MFU (training logs, ``bench sharding``).

The convention behind published MFU figures: 2 FLOPs per multiply-add of every weight applied, forward +
backward = 3 forwards, attention's score and value products counted, recomputation (remat) not counted.
"""
from __future__ import annotations

import jax
import numpy as np


def analytic_train_flops(run, global_batch: int) -> float | None:
    """Model FLOPs of one DiT training step (forward + backward = 3 forwards): 2 FLOPs per multiply-add of every
    weight, for each latent frame (blocks, in/out projections), each text token (cross-attention keys/values, the
    token projection) or once per example (timestep and global embeddings), plus self-attention (QK^T and AV:
    4 T^2 D per layer) and cross-attention (4 T L D) — the convention behind MFU figures. ``None`` for the U-Net
    (convolutions at several rates: use the compiled count)."""
    config = run.config
    if config.model.type != "dit":
        return None
    frames, tokens = int(config.training.crop_frames), int(run.text_length) + 2  # prompt + the 2 timing tokens
    width, depth = int(config.model.embed_dim), int(config.model.depth)
    weights = _kernel_sizes(run)
    forward = (2 * (weights["frame"] * frames + weights["token"] * tokens + weights["example"])
               + depth * (4 * frames ** 2 * width + 4 * frames * tokens * width))
    return float(3 * forward * global_batch)


PER_TOKEN = ("cross_attn/kv", "to_cond_embed")
PER_EXAMPLE = ("to_global_embed", "to_timestep_embed")


def _kernel_sizes(run) -> dict[str, int]:
    """Weights of the DiT's kernels by how often they apply: per latent frame, per text token, per example."""
    import flax.linen as nn
    from stableaudio_jax.training.diffusion_steps import example_batch
    batch = example_batch(run)
    params = jax.eval_shape(lambda: run.model.init(jax.random.key(0), batch["latents"], batch["text_embeddings"],
                                                   batch["text_mask"]))
    sizes = {"frame": 0, "token": 0, "example": 0}
    for path, leaf in jax.tree_util.tree_leaves_with_path(nn.unbox(params["denoiser"])):
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        if name.endswith("kernel"):
            kind = ("token" if any(k in name for k in PER_TOKEN) else
                    "example" if any(k in name for k in PER_EXAMPLE) else "frame")
            sizes[kind] += int(np.prod(leaf.shape))
    return sizes


def train_step_flops(steps, global_batch: int) -> float | None:
    """FLOPs of one training step for MFU: the analytic count (DiT), else XLA's count of the lowered, not yet
    partitioned step (the whole batch; cheap: no compile). None if neither is known."""
    flops = analytic_train_flops(steps.run, global_batch)
    if flops is not None:
        return flops
    try:
        analysis = steps.lower(global_batch).cost_analysis()
    except Exception:  # a backend without cost analysis: no MFU in the logs, training goes on
        return None
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"]) if analysis and analysis.get("flops") else None
