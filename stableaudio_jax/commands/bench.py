"""``stableaudio-jax bench sharding``: compare sharding strategies for a denoiser's training step.

  stableaudio-jax bench sharding --config configs/dit.py:tiny --mesh 8x1x1,4x2x1,2x2x2,1x8x1 \\
      --remat none,full --batch 2 --out runs/bench/dit_tiny.jsonl --plot runs/bench/dit_tiny.png
  stableaudio-jax bench sharding --config configs/dit.py:sao --target tpu:v5p-64 --mesh 32x1x1,8x4x1,1x32x1
  stableaudio-jax bench sharding --config configs/dit.py:sao --target tpu:v5p-8 --find
  stableaudio-jax bench sharding --config configs/dit.py:sao --target tpu:v5p --find --global-batch 256

Each strategy (every combination of --mesh, --batch, --remat, --seconds, --scan, --attention, --param-dtype,
--opt-dtype) is compiled for --target and reported: per-device memory as XLA plans it (arguments, outputs,
donated, temporaries) and whether it fits the target's HBM, compiled FLOPs and bytes, the collectives in the
optimized HLO (count, result bytes, bytes each device sends, per mesh axis), two lower bounds on the step time
(the roofline of those counts over each axis's links, and XLA's own on TPU), the MFU the roofline implies (a
ceiling: "MFU at best"), the model's analytic FLOPs, and — on local devices, unless --no-measure — the
median step time after warm-up and its MFU. Targets: cpu (the local devices, measured), tpu:v5e-8, tpu:v5p-64,
tpu:v6e-256, ... and gpu:h100x8, ... (compiled ahead of time without the hardware: pip install
'stableaudio-jax[aot]'). Rows go to --out as JSON lines (appended as they come), a markdown table to stdout (and
--markdown), a PNG to --plot.

--find searches every data x fsdp mesh (x tensor up to --max-tensor) with the memory ladder --remat x --opt-dtype
x --param-dtype (least saving first; default remat none, dots_no_batch, dots, full) and prints the fastest
strategy that fits. With a slice family (tpu:v5p, gpu:h100) and --global-batch it first finds the smallest slice
that trains that batch.
"""
from __future__ import annotations

import argparse
import os

from stableaudio_jax import paths


def _list(kind):
    def parse(text: str):
        return [kind(v) for v in text.split(",") if v]
    return parse


def _optional_bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected true or false")
    return text.lower() == "true"


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks: sharding strategies", description=__doc__.split("\n\n")[0])
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    p = kinds.add_parser("sharding", help="compile (and run) the training step for each sharding strategy",
                         description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/dit.py:tiny", help="a denoiser config (configs/dit.py:*, "
                                                                    "configs/unet.py:*; configs/vae.py:* for "
                                                                    "vae-train) and overrides")
    p.add_argument("--workload", default="train", choices=("train", "generate", "vae-train"),
                   help="train: the full diffusion training step; generate: conditioning + sampling scan with CFG + "
                        "chunked VAE decode of one batch; vae-train: the VAE's generator + discriminator steps "
                        "(configs/vae.py:*); generate and vae-train are compiled, not run")
    p.add_argument("--steps", type=int, default=100, help="generate: sampler steps")
    p.add_argument("--target", default="cpu", help="cpu (local devices), tpu:<type>-<N>, gpu:<chip>x<N>; with "
                                                  "--find --global-batch also a family: tpu:v5p, gpu:h100")
    p.add_argument("--mesh", type=_list(str), default=["-1x1x1"],
                   help="comma-separated data x fsdp x tensor meshes over the target's devices (one size may be -1)")
    p.add_argument("--batch", type=_list(int), default=[1], help="examples per device of the data x fsdp axes")
    p.add_argument("--remat", type=_list(str), default=[None], help="DiT activation checkpointing policies "
                                                                    "(default: the config's)")
    p.add_argument("--seconds", type=_list(float), default=[None], help="audio per example (default: the "
                                                                        "config's training crop)")
    p.add_argument("--scan", type=_list(_optional_bool), default=[None], help="DiT scanned layers: true,false")
    p.add_argument("--attention", type=_list(str), default=[None],
                   help="attention implementations (auto, flash (the Pallas TPU kernel), xla, cudnn, einsum)")
    p.add_argument("--param-dtype", type=_list(str), default=[None], help="float32, bfloat16")
    p.add_argument("--opt-dtype", type=_list(str), default=[None], help="AdamW first-moment dtypes: float32, bfloat16")
    p.add_argument("--find", action="store_true", help="search for the fastest strategy that fits the target")
    p.add_argument("--global-batch", type=int, help="--find: the global batch to train (default: --batch per "
                                                    "device)")
    p.add_argument("--max-tensor", type=int, default=1, help="--find: largest tensor-parallel axis searched")
    p.add_argument("--no-unroll-cost", action="store_true", help="skip the 1- and 2-layer compiles that cost a "
                                                                "scanned DiT (faster; no bound for scanned rows)")
    p.add_argument("--no-measure", action="store_true", help="compile only: memory, cost, collectives")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per strategy (after one warm-up)")
    p.add_argument("--out", help="JSON lines, one per strategy (appended)")
    p.add_argument("--markdown", help="also write the table here")
    p.add_argument("--plot", help="PNG: memory and step time per strategy")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax.bench import sharding, targets
    from stableaudio_jax.bench.strategies import grid
    from stableaudio_jax.commands import setup_logging
    from stableaudio_jax.config_loader import load_config
    setup_logging()
    config = load_config(args.config, overrides)
    if args.out:
        paths.makedirs(os.path.dirname(paths.absolute(args.out)))
    if args.find:
        return _find(args, config)
    target = targets.resolve(args.target)
    strategies = grid(args.mesh, target.device_count, args.batch, args.remat, args.seconds, args.scan,
                      args.attention, args.param_dtype, args.opt_dtype)
    rows = sharding.run_bench(config, strategies, args.workload, not args.no_measure, args.repeats, args.out,
                              not args.no_progress, target, not args.no_unroll_cost, args.steps)
    _report(args, rows, f"{args.config}, workload {args.workload}, {target.name}: {target.device_count} x "
                        f"{target.devices[0].device_kind}")
    return 0


def _report(args, rows, title: str) -> None:
    from stableaudio_jax.bench import sharding
    table = sharding.markdown(rows)
    print(f"{title}\n\n{table}")
    if args.markdown:
        paths.write_text_atomic(args.markdown, table)
    if args.plot:
        print(f"plot: {sharding.plot(rows, args.plot)}")


def _find(args, config) -> int:
    import json

    from stableaudio_jax.bench import planner, sharding, targets
    if len(args.seconds) > 1 or len(args.attention) > 1:
        raise SystemExit("--find searches meshes and the memory ladder: give one --seconds and one --attention")
    options = dict(seconds=args.seconds[0], remats=None if args.remat == [None] else args.remat,
                   opt_dtypes=args.opt_dtype, param_dtypes=args.param_dtype, attention=args.attention[0],
                   max_tensor=args.max_tensor, progress=not args.no_progress)
    if targets.is_family(args.target):
        if args.global_batch is None:
            raise SystemExit(f"--target {args.target} is a slice family: give --global-batch to find its smallest "
                             "slice, or a slice such as tpu:v5p-64")
        found = planner.smallest_slice(config, args.target, args.global_batch, **options)
        for tried in found["tried"]:
            print(f"{tried['target']}: {'fits' if tried['fits'] else 'does not fit'}"
                  + (f" ({tried['memory_estimate'] / 2 ** 30:.2f} GiB per device, {tried['strategy']})"
                     if "memory_estimate" in tried else f" ({tried.get('reason')})"))
    else:
        found = planner.find(config, targets.resolve(args.target),
                             per_device_batch=None if args.global_batch else args.batch,
                             global_batch=args.global_batch, **options)
    if args.out:
        paths.append_text(args.out, json.dumps(found) + "\n")
    best = found["best"]
    if best is None:
        print(f"nothing fits: {len(found['screened'])} strategies screened; try a larger slice, --remat full, "
              "--opt-dtype bfloat16, --param-dtype bfloat16 or a smaller --batch")
        return 1
    target = best["target"]
    _report(args, [best], f"fastest strategy that fits {target['name']} ({target['devices']} x "
                          f"{target['device_kind']}), {len(found['screened'])} screened:")
    m = best["memory"]
    print(f"best: {best['strategy']['name']} — global batch {best['strategy']['global_batch']}, "
          f"{m['total'] / 2 ** 30:.2f} GiB per device of {target['usable_bytes'] / 2 ** 30:.2f} GiB usable, "
          f"lower bounds per step: roofline {best['bound_seconds'] * 1e3:.1f} ms, XLA {sharding.xla_cell(best)} ms"
          + (f", MFU at best {best['mfu_at_bound']:.0%}" if best.get("mfu_at_bound") else ""))
    return 0
