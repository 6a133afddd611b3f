"""DiT forward and forward + backward: our Flax DiT against diffusers' ``StableAudioDiTModel`` with the same
weights, timed as interleaved pairs in one process.

  python benchmarks/dit_bench.py --config configs/dit.py:sao --frames 1024 --batch 2 --dtype bfloat16 \
      --out docs/results/dit_gpu.json
  python benchmarks/dit_bench.py --config configs/dit.py:sao --config.model.depth=2 --frames 256 --dtype float32 \
      --pairs 7 --out docs/results/dit_cpu.json           # a CPU-sized check of the same code path

One forward at ``--frames`` latent frames and batch ``--batch`` (2 = one classifier-free-guidance step of one
prompt) with ``--tokens`` cross-attention tokens, and one forward + backward (gradients of every weight of
``sum(out ** 2)``: the training step's model work). Each is timed as ``--pairs`` interleaved pairs (ours, torch,
ours, ...) after a warm-up pair; the ratio of a pair is torch seconds / our seconds. ``--scan-layers both`` (the
default) measures the configuration users run (``scan_layers=true``, configs/dit.py:sao) and the unrolled layers
(``scan_layers=false``) as separate rows against the same torch model. Also reports the analytic FLOPs of one
forward and MFU against the device's dense bf16 peak where it is known (H100/H200/A100). Random weights: the torch
model's init, converted with our converter (so the outputs are compared too).
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
from common import MIN_DOC_PAIRS, environment, interleaved_pairs, median_seconds, write_report

from stableaudio_jax.config_loader import load_config, split_override_args
from stableaudio_jax.convert.dit import dit_params_from_state_dict
from stableaudio_jax.models.dit import DiT, dit_from_config
from stableaudio_jax.store import resolve_conditioning

PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}
SCAN_CHOICES = {"both": (True, False), "true": (True,), "false": (False,), "config": (None,)}


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


def _inputs(dit: DiT, frames: int, batch: int, tokens: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((batch, frames, dit.io_channels)).astype(np.float32),
            rng.uniform(0, 1, batch).astype(np.float32),
            rng.standard_normal((batch, tokens, dit.cond_token_dim)).astype(np.float32),
            rng.standard_normal((batch, dit.global_cond_dim)).astype(np.float32)]


class TorchReference:
    """diffusers' DiT on the same inputs: a no-grad forward and a forward + backward, each blocking until done."""

    def __init__(self, dit: DiT, inputs, dtype: str, on_gpu: bool):
        from diffusers.models.embeddings import get_1d_rotary_pos_embed
        self.device = "cuda" if on_gpu else "cpu"
        self.torch, self.model, self.state = _torch_model(dit, dtype, self.device)
        x, t, cross, g = inputs
        tdtype = getattr(self.torch, dtype)
        to = lambda a: self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device, tdtype)  # noqa: E731
        rotary = get_1d_rotary_pos_embed(dit.head_dim // 2, x.shape[1] + 1, use_real=True,
                                         repeat_interleave_real=False)
        self.kwargs = dict(hidden_states=to(x.transpose(0, 2, 1)), timestep=to(t), encoder_hidden_states=to(cross),
                           global_hidden_states=to(g[:, None]), rotary_embedding=tuple(r.to(self.device)
                                                                                      for r in rotary),
                           return_dict=False)

    def _sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def forward(self):
        with self.torch.no_grad():
            out = self.model(**self.kwargs)[0]
        self._sync()
        return out

    def forward_backward(self):
        self.model.zero_grad(set_to_none=True)
        self.model(**self.kwargs)[0].float().square().sum().backward()
        self._sync()


def _ours(dit: DiT, params, args):
    forward = jax.jit(dit.apply)
    grad = jax.jit(jax.grad(lambda p, *a: jnp.sum(jnp.square(dit.apply(p, *a).astype(jnp.float32)))))
    return (lambda: forward(params, *args).block_until_ready(),
            lambda: jax.block_until_ready(grad(params, *args)), forward)


def _with_rates(timing: dict, flops: float, peak: float | None) -> dict:
    """Adds throughput (from the median seconds) and MFU where the device's peak is known."""
    ours = timing["summary"]["ours_s"]["median"]
    theirs = timing["summary"]["reference_s"]["median"]
    return dict(timing, flops=flops, jax_per_s=1 / ours, torch_per_s=1 / theirs,
                jax_mfu=None if peak is None else flops / ours / peak,
                torch_mfu=None if peak is None else flops / theirs / peak)


def measure_row(model_cfg, scan: bool | None, inputs, reference: TorchReference | None, pairs: int, dtype: str,
                peak: float | None, flops: float) -> dict:
    """One row: our DiT with ``scan_layers=scan`` (None: as the config says) against the shared reference."""
    cfg = dict(model_cfg, rotary_dim=None)
    if scan is not None:
        cfg["scan_layers"] = scan
    dit = dit_from_config(cfg, dtype=dtype)
    args = [jnp.asarray(a) for a in inputs]
    if reference is None:
        params = jax.jit(dit.init)(jax.random.key(0), *(a[:1] for a in args))
        fwd, fwd_bwd, _ = _ours(dit, params, args)
        seconds = median_seconds(fwd, pairs)
        return {"scan_layers": dit.scan_layers, "forward": {"jax_seconds": seconds, "jax_per_s": 1 / seconds,
                                                            "jax_mfu": None if peak is None else flops / seconds / peak}}
    # On the device once, as the pipeline holds them: the converter returns numpy arrays, and a jitted call with
    # numpy arguments copies them in on every call (on CPU ~13 % of a depth-2 forward: 350 MB of weights)
    params = jax.device_put(dit_params_from_state_dict(reference.state, dit, "diffusers",
                                                       "diffusers StableAudioDiTModel"))
    fwd, fwd_bwd, forward = _ours(dit, params, args)
    expected = reference.forward().float().cpu().numpy().transpose(0, 2, 1)
    row = {"scan_layers": dit.scan_layers,
           "max_abs_diff": float(np.abs(np.asarray(forward(params, *args)) - expected).max()),
           "forward": _with_rates(interleaved_pairs(fwd, reference.forward, pairs), flops, peak),
           "forward_backward": _with_rates(interleaved_pairs(fwd_bwd, reference.forward_backward, pairs),
                                           3 * flops, peak)}
    return row


def run(model_cfg, args) -> dict:
    probe = dit_from_config(dict(model_cfg, rotary_dim=None), dtype=args.dtype)
    inputs = _inputs(probe, args.frames, args.batch, args.tokens)
    on_gpu = jax.default_backend() == "gpu"
    reference = None if args.skip_torch else TorchReference(probe, inputs, args.dtype, on_gpu)
    flops = forward_flops(probe, args.frames, args.tokens, args.batch)
    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in kind), None)
    rows = [measure_row(model_cfg, scan, inputs, reference, args.pairs, args.dtype, peak, flops)
            for scan in SCAN_CHOICES[args.scan_layers]]
    return {"frames": args.frames, "batch": args.batch, "tokens": args.tokens, "dtype": args.dtype,
            "depth": probe.depth, "embed_dim": probe.embed_dim, "flops_per_forward": flops, "pairs": args.pairs,
            "reference": None if args.skip_torch else "diffusers StableAudioDiTModel (torch SDPA attention)",
            "rows": rows}


def main(argv=None) -> int:
    overrides, rest = split_override_args(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/dit.py:sao")
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=130)
    parser.add_argument("--pairs", "--repeats", dest="pairs", type=int, default=MIN_DOC_PAIRS,
                        help="timed interleaved pairs per figure (--repeats: the older name)")
    parser.add_argument("--scan-layers", choices=sorted(SCAN_CHOICES), default="both",
                        help="rows to measure: both (scan_layers true and false), true, false, or as the config says")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(rest)
    model_cfg = resolve_conditioning(load_config(args.config, overrides)).model  # widths from cond_dim
    report = {"benchmark": "dit_forward_backward", "config": args.config, "overrides": overrides,
              **environment(not args.skip_torch), "dit": run(model_cfg, args)}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
