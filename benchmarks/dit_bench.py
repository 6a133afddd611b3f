"""DiT forward benchmark: our Flax DiT against diffusers' ``StableAudioDiTModel`` with the same weights, same run.

  python benchmarks/dit_bench.py --config configs/dit.py:sao --frames 1024 --batch 2 --dtype bfloat16 \
      --out docs/results/dit_gpu.json
  python benchmarks/dit_bench.py --config configs/dit.py:sao --config.model.depth=2 --frames 256 --dtype float32 \
      --out docs/results/dit_cpu.json           # a CPU-sized check of the same code path

One forward (and one forward + backward: gradients of every weight) at ``--frames`` latent frames and batch ``--batch`` (2 = one classifier-free-guidance step of one
prompt) with 130 cross-attention tokens. Reports forward/s for both, their ratio, the analytic FLOPs of one forward
and MFU against the device's dense bf16 peak where it is known (H100/H200/A100). Random weights: the torch model's
init, converted with our converter (so the outputs can be compared too).
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
from common import environment, median_seconds, write_report

from stableaudio_jax.config_loader import load_config, split_override_args
from stableaudio_jax.convert.dit import dit_params_from_state_dict
from stableaudio_jax.models.dit import DiT, dit_from_config
from stableaudio_jax.store import resolve_conditioning

PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}


def forward_flops(dit: DiT, frames: int, tokens: int, batch: int) -> float:
    """Matmul FLOPs of one forward (2 per multiply-add), attention included; elementwise work ignored."""
    d, layers, seq = dit.embed_dim, dit.depth, frames + 1
    cond = dit.cond_embed_dim or dit.cond_token_dim
    kv = dit._block_kwargs()["kv_heads"] * dit.head_dim
    ff = dit.embed_dim * dit.ff_mult
    per_token_block = 3 * d * d + d * d + d * d + d * d + 2 * d * ff + ff * d  # qkv, out, cross q, cross out, ff
    block = seq * per_token_block + tokens * cond * 2 * kv  # + cross k/v projections of the context
    attention = 2 * seq * seq * d + 2 * seq * tokens * d  # QK^T and AV, self and cross
    return 2.0 * batch * (layers * (block + attention) + seq * dit.io_channels * d * 2)


def _torch_model(dit: DiT, dtype: str, device: str):
    import torch
    from diffusers import StableAudioDiTModel
    torch.manual_seed(0)
    model = StableAudioDiTModel(
        sample_size=1024, in_channels=dit.io_channels, num_layers=dit.depth, attention_head_dim=dit.head_dim,
        num_attention_heads=dit.num_heads, num_key_value_attention_heads=dit._block_kwargs()["kv_heads"],
        out_channels=dit.io_channels, cross_attention_dim=dit.cond_embed_dim or dit.cond_token_dim,
        time_proj_dim=dit.timestep_features_dim, global_states_input_dim=dit.global_cond_dim,
        cross_attention_input_dim=dit.cond_token_dim).eval()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    model = model.to(device=device, dtype=getattr(torch, dtype))
    return torch, model, state


def run(model_cfg, frames: int, batch: int, tokens: int, repeats: int, dtype: str, skip_torch: bool) -> dict:
    dit = dit_from_config(dict(model_cfg, rotary_dim=None), dtype=dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, frames, dit.io_channels)).astype(np.float32)
    t = rng.uniform(0, 1, batch).astype(np.float32)
    cross = rng.standard_normal((batch, tokens, dit.cond_token_dim)).astype(np.float32)
    g = rng.standard_normal((batch, dit.global_cond_dim)).astype(np.float32)
    on_gpu = jax.default_backend() == "gpu"
    if skip_torch:
        params = jax.jit(dit.init)(jax.random.key(0), x[:1], t[:1], cross[:1], g[:1])
    else:
        torch, ref, state = _torch_model(dit, dtype, "cuda" if on_gpu else "cpu")
        params = dit_params_from_state_dict(state, dit, "diffusers", "diffusers StableAudioDiTModel")
    forward = jax.jit(dit.apply)
    args = [jnp.asarray(a) for a in (x, t, cross, g)]
    seconds = median_seconds(lambda: forward(params, *args).block_until_ready(), repeats)
    flops = forward_flops(dit, frames, tokens, batch)
    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in kind), None)
    result = {"frames": frames, "batch": batch, "tokens": tokens, "dtype": dtype, "depth": dit.depth,
              "embed_dim": dit.embed_dim, "flops_per_forward": flops, "jax_seconds": seconds,
              "jax_forwards_per_s": 1 / seconds, "jax_tflops_per_s": flops / seconds / 1e12,
              "jax_mfu": None if peak is None else flops / seconds / peak}
    if skip_torch:
        return result
    from diffusers.models.embeddings import get_1d_rotary_pos_embed
    device = "cuda" if on_gpu else "cpu"
    tdtype = getattr(torch, dtype)
    rotary = tuple(r.to(device) for r in get_1d_rotary_pos_embed(dit.head_dim // 2, frames + 1, use_real=True,
                                                                  repeat_interleave_real=False))
    tx = torch.from_numpy(x.transpose(0, 2, 1).copy()).to(device, tdtype)
    tt, tc = torch.from_numpy(t).to(device, tdtype), torch.from_numpy(cross).to(device, tdtype)
    tg = torch.from_numpy(g[:, None].copy()).to(device, tdtype)

    def torch_forward():
        with torch.no_grad():
            out = ref(tx, tt, encoder_hidden_states=tc, global_hidden_states=tg, rotary_embedding=rotary,
                      return_dict=False)[0]
        if on_gpu:
            torch.cuda.synchronize()
        return out

    torch_seconds = median_seconds(torch_forward, repeats)
    expected = torch_forward().float().cpu().numpy().transpose(0, 2, 1)
    result.update(torch_seconds=torch_seconds, torch_forwards_per_s=1 / torch_seconds,
                  torch_mfu=None if peak is None else flops / torch_seconds / peak,
                  jax_speedup_over_torch=torch_seconds / seconds,
                  max_abs_diff=float(np.abs(np.asarray(forward(params, *args)) - expected).max()))
    result["backward"] = _forward_backward(dit, params, args, ref, (tx, tt, tc, tg, rotary), repeats, on_gpu,
                                           3 * flops)
    return result


def _forward_backward(dit, params, args, ref, torch_args, repeats: int, on_gpu: bool, flops: float) -> dict:
    """Forward + backward (gradients of every weight) of ``sum(out ** 2)``, both frameworks, the same inputs:
    the training step's model work (AdamW and EMA excluded)."""
    import torch
    grad = jax.jit(jax.grad(lambda p, *a: jnp.sum(jnp.square(dit.apply(p, *a).astype(jnp.float32)))))
    seconds = median_seconds(lambda: jax.block_until_ready(grad(params, *args)), repeats)
    tx, tt, tc, tg, rotary = torch_args

    def torch_step():
        ref.zero_grad(set_to_none=True)
        out = ref(tx, tt, encoder_hidden_states=tc, global_hidden_states=tg, rotary_embedding=rotary,
                  return_dict=False)[0]
        out.float().square().sum().backward()
        if on_gpu:
            torch.cuda.synchronize()

    torch_seconds = median_seconds(torch_step, repeats)
    return {"flops": flops, "jax_seconds": seconds, "torch_seconds": torch_seconds,
            "jax_speedup_over_torch": torch_seconds / seconds}


def main(argv=None) -> int:
    overrides, rest = split_override_args(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/dit.py:sao")
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=130)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(rest)
    model_cfg = resolve_conditioning(load_config(args.config, overrides)).model  # widths from cond_dim
    report = {"benchmark": "dit_forward_backward", "config": args.config, "overrides": overrides,
              **environment(not args.skip_torch),
              "forward": run(model_cfg, args.frames, args.batch, args.tokens, args.repeats, args.dtype,
                             args.skip_torch)}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
