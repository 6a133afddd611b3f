"""Where a DiT forward spends its time on this device: XLA's own per-op trace, summed by kind of work.

  python benchmarks/dit_profile.py --config configs/dit.py:sao --config.model.depth=2 --frames 256 \
      --dtype float32 --out docs/results/dit_cpu_profile.json

Runs ``--calls`` jitted forwards under ``jax.profiler.trace`` for each of ``scan_layers`` true and false, reads the
trace back (``jax.profiler.ProfileData``) and sums the duration of every executed HLO op (fusion) by what its
fused computation does, read off the compiled HLO:

  projection matmuls   dots without batch dimensions (qkv, output, cross-attention and feed-forward projections)
  attention matmuls    batched dots (scores and the weighted sum of values)
  layer weight slices  dynamic-slices that copy one layer's weights out of the stacked ``[depth, ...]`` params
                       (the scanned layers' price: XLA:CPU materialises each slice before its matmul)
  layout copies        pure data movement: transposes, copies, slices
  other                everything that computes: normalisation, softmax, rotary, activations, adds (with any
                       transposes or slices fused into them)

Shares are of the summed op time; on a loaded host each op's wall time is inflated alike, so shares stay
comparable while absolute times do not.
"""
from __future__ import annotations

import argparse
import collections
import glob
import re
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from common import environment, write_report

from stableaudio_jax.config_loader import load_config, split_override_args
from stableaudio_jax.models.dit import dit_from_config
from stableaudio_jax.store import resolve_conditioning

KINDS = ("projection matmuls", "attention matmuls", "layer weight slices", "layout copies", "other")


def fusion_kinds(hlo_text: str) -> dict[str, str]:
    """Op name -> kind, for every instruction that calls a fused computation (and plain dots)."""
    bodies, name = {}, None
    for line in hlo_text.splitlines():
        header = re.match(r"^%?([\w.\-]+) .*\{$", line)
        if header and not line.startswith(" "):
            name, bodies[header.group(1)] = header.group(1), []
        elif name is not None:
            bodies[name].append(line)
    kinds = {}
    for line in hlo_text.splitlines():
        call = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .* calls=%?([\w.\-]+)", line)
        if call and call.group(2) in bodies:
            kinds[call.group(1)] = _kind("\n".join(bodies[call.group(2)]))
        elif re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .* dot\(", line):
            kinds[re.match(r"\s*(?:ROOT )?%?([\w.\-]+)", line).group(1)] = _kind(line)
    return kinds


MOVES = {"parameter", "constant", "bitcast", "reshape", "copy"}  # opcodes that only move or relabel data


def _kind(body: str) -> str:
    """A fused computation's kind from its opcodes: any dot decides; otherwise a pure data movement is a weight
    slice (a dynamic-slice of the stacked params) or a layout copy; anything computing is "other"."""
    if " dot(" in body:
        return "attention matmuls" if "lhs_batch_dims" in body else "projection matmuls"
    opcodes = set(re.findall(r"= \S+ ([a-z][\w-]*)\(", body))
    if "dynamic-slice" in opcodes and opcodes <= MOVES | {"dynamic-slice"}:
        return "layer weight slices"
    if opcodes <= MOVES | {"transpose", "slice"}:
        return "layout copies"
    return "other"


def profile(dit, params, args, calls: int) -> dict:
    forward = jax.jit(dit.apply)
    for _ in range(2):
        forward(params, *args).block_until_ready()
    kinds = fusion_kinds(forward.lower(params, *args).compile().as_text())
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            for _ in range(calls):
                forward(params, *args).block_until_ready()
        trace = jax.profiler.ProfileData.from_file(glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)[0])
    seconds = collections.Counter()
    for plane in trace.planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in kinds:  # executed ops only (not the executor's or the while loop's spans)
                    seconds[kinds[event.name]] += event.duration_ns / 1e9 / calls
    total = sum(seconds.values())
    return {"op_seconds_per_call": total,
            "by_kind": {k: {"seconds": seconds[k], "share": seconds[k] / total} for k in KINDS}}


def main(argv=None) -> int:
    overrides, rest = split_override_args(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/dit.py:sao")
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=130)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out")
    args = parser.parse_args(rest)
    model_cfg = resolve_conditioning(load_config(args.config, overrides)).model
    rows = []
    for scan in (True, False):
        dit = dit_from_config(dict(model_cfg, rotary_dim=None, scan_layers=scan), dtype=args.dtype)
        rng = np.random.default_rng(0)
        inputs = [jnp.asarray(rng.standard_normal(s).astype(np.float32)) for s in
                  [(args.batch, args.frames, dit.io_channels), (args.batch,),
                   (args.batch, args.tokens, dit.cond_token_dim), (args.batch, dit.global_cond_dim)]]
        params = jax.device_put(jax.jit(dit.init)(jax.random.key(0), *inputs))
        rows.append({"scan_layers": scan, **profile(dit, params, inputs, args.calls)})
    report = {"benchmark": "dit_profile", "config": args.config, "overrides": overrides, "frames": args.frames,
              "batch": args.batch, "tokens": args.tokens, "dtype": args.dtype, **environment(False), "rows": rows}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
