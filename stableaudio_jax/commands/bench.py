"""``stableaudio-jax bench sharding``: compare sharding strategies for a denoiser's training step.

  stableaudio-jax bench sharding --config configs/dit.py:tiny --mesh 8x1x1,4x2x1,2x2x2,1x8x1 \\
      --remat none,full --batch 2 --out runs/bench/dit_tiny.jsonl --plot runs/bench/dit_tiny.png

Each strategy (every combination of --mesh, --batch, --remat, --seconds, --scan, --attention, --param-dtype) is
compiled on the local devices and reported: per-device memory as XLA plans it (arguments, outputs, donated,
temporaries), compiled FLOPs and bytes, the collectives in the optimized HLO (count and bytes by kind), the
model's analytic FLOPs, and — unless --no-measure — the median step time after warm-up. Rows go to --out as JSON
lines (appended as they come), a markdown table to stdout (and --markdown), a PNG to --plot.
"""
from __future__ import annotations

import argparse
import os


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
                                                                    "configs/unet.py:*) and overrides")
    p.add_argument("--workload", default="train", choices=("train",), help="the full diffusion training step")
    p.add_argument("--mesh", type=_list(str), default=["-1x1x1"],
                   help="comma-separated data x fsdp x tensor meshes over the local devices (one size may be -1)")
    p.add_argument("--batch", type=_list(int), default=[1], help="examples per device of the data x fsdp axes")
    p.add_argument("--remat", type=_list(str), default=[None], help="DiT activation checkpointing policies "
                                                                    "(default: the config's)")
    p.add_argument("--seconds", type=_list(float), default=[None], help="audio per example (default: the "
                                                                        "config's training crop)")
    p.add_argument("--scan", type=_list(_optional_bool), default=[None], help="DiT scanned layers: true,false")
    p.add_argument("--attention", type=_list(str), default=[None], help="attention implementations (auto, xla, "
                                                                        "cudnn, einsum)")
    p.add_argument("--param-dtype", type=_list(str), default=[None], help="float32, bfloat16")
    p.add_argument("--no-measure", action="store_true", help="compile only: memory, cost, collectives")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per strategy (after one warm-up)")
    p.add_argument("--out", help="JSON lines, one per strategy (appended)")
    p.add_argument("--markdown", help="also write the table here")
    p.add_argument("--plot", help="PNG: memory and step time per strategy")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    import jax

    from stableaudio_jax.bench import sharding
    from stableaudio_jax.bench.strategies import grid
    from stableaudio_jax.commands import setup_logging
    from stableaudio_jax.config_loader import load_config
    setup_logging()
    config = load_config(args.config, overrides)
    strategies = grid(args.mesh, jax.device_count(), args.batch, args.remat, args.seconds, args.scan,
                      args.attention, args.param_dtype)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    rows = sharding.run_bench(config, strategies, args.workload, not args.no_measure, args.repeats, args.out,
                              not args.no_progress)
    table = sharding.markdown(rows)
    print(f"{args.config}, workload {args.workload}, {jax.device_count()} {jax.devices()[0].platform} devices\n")
    print(table)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table)
    if args.plot:
        print(f"plot: {sharding.plot(rows, args.plot)}")
    return 0
