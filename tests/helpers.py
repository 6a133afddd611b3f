"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""
import jax
import numpy as np


def randomize_snake(params, scale=0.3, seed=0):
    """Non-zero SnakeBeta alpha/beta (they initialise to 0, which would hide layout errors)."""
    rng = np.random.default_rng(seed)

    def f(path, x):
        name = str(path[-1])
        if "alpha" in name or "beta" in name:
            return x + scale * rng.standard_normal(x.shape).astype(np.asarray(x).dtype)
        return x

    return jax.tree_util.tree_map_with_path(f, params)


# A small diffusers StableAudioDiTModel that keeps SAO's structure: grouped-query cross-attention (4 query heads,
# 2 key/value heads) and partial rotary (32 of 64 head dims).
TINY_DIFFUSERS_DIT = dict(sample_size=32, in_channels=8, num_layers=2, attention_head_dim=64, num_attention_heads=4,
                          num_key_value_attention_heads=2, out_channels=8, cross_attention_dim=128, time_proj_dim=32,
                          global_states_input_dim=96, cross_attention_input_dim=48)


def randomized_diffusers_dit(seed=0, zero_norm_bias=True, **overrides):
    """Every parameter randomised (the zero-initialised output projections and 1x1 convs too)."""
    import torch
    from diffusers import StableAudioDiTModel
    torch.manual_seed(seed)
    model = StableAudioDiTModel(**dict(TINY_DIFFUSERS_DIT, **overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(0.5 * torch.randn_like(p) / p.shape[-1] ** 0.5)
            elif name.endswith("norm1.bias") or name.endswith("norm2.bias") or name.endswith("norm3.bias"):
                p.copy_(torch.zeros_like(p) if zero_norm_bias else 0.1 * torch.randn_like(p))
            elif "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def diffusers_dit_forward(model, x_btc, t, cross, global_cond):
    """Runs diffusers' DiT on channels-last numpy inputs with the pipeline's rotary table; channels-last output."""
    import torch
    from diffusers.models.embeddings import get_1d_rotary_pos_embed
    head_dim = model.config.attention_head_dim
    rotary = get_1d_rotary_pos_embed(head_dim // 2, x_btc.shape[1] + 1, use_real=True, repeat_interleave_real=False)
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x_btc.transpose(0, 2, 1))), torch.from_numpy(t),
                    encoder_hidden_states=torch.from_numpy(cross),
                    global_hidden_states=torch.from_numpy(global_cond[:, None]), rotary_embedding=rotary,
                    return_dict=False)[0]
    return out.numpy().transpose(0, 2, 1)


def dit_inputs(batch=2, frames=20, tokens=7, seed=0):
    rng = np.random.default_rng(seed)
    cfg = TINY_DIFFUSERS_DIT
    return (rng.standard_normal((batch, frames, cfg["in_channels"])).astype(np.float32),
            rng.uniform(0, 1, batch).astype(np.float32),
            rng.standard_normal((batch, tokens, cfg["cross_attention_input_dim"])).astype(np.float32),
            rng.standard_normal((batch, cfg["global_states_input_dim"])).astype(np.float32))
