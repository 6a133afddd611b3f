"""The 15-minute quickstart (``--preset cpu``) at two VAE learning rates: does the rate that made the cpu-long VAE
learn (5e-4, docs/results/learning_cpu_long2.json) help the cpu preset's 800 spectral steps too? One whole timed
quickstart per rate (the same seeds and data; only ``training.gen_optimizer.lr`` differs), then each VAE evaluated
again on the validation split (16 more held-out clips) beside the quickstart's own test-split evaluation. Writes
docs/results/cpu_preset_vae_lr.json.

  python benchmarks/cpu_preset_vae_lr.py --workdir runs/vae_lr --rates 2e-3,5e-4

Run it on an idle machine: the stage times are the preset's 15-minute bound. A rate whose quickstart is already
finished in ``--workdir`` is read, not run again (so its time is that of the first run).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LR_KEY = "training.gen_optimizer.lr="
VALID_CLIPS = 16  # the cpu preset's validation split: 8 pieces, 2 clips each


def rate_overrides(rate: float) -> list[str]:
    """The cpu preset's VAE overrides with the generator's learning rate replaced."""
    from stableaudio_jax.config_loader import load_config
    overrides = list(load_config("configs/quickstart.py:cpu").vae.overrides)
    if sum(o.startswith(LR_KEY) for o in overrides) != 1:
        raise ValueError(f"configs/quickstart.py:cpu: expected one {LR_KEY}... override, got {overrides}")
    return [f"{LR_KEY}{rate}" if o.startswith(LR_KEY) else o for o in overrides]


def run_quickstart(workdir: str, rate: float) -> float:
    command = ["stableaudio-jax", "quickstart", "--workdir", workdir, "--preset", "cpu", "--no-progress",
               f"--config.vae.overrides={rate_overrides(rate)!r}"]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def evaluate_vae_on_valid(workdir: str) -> dict:
    out = os.path.join(workdir, "eval_vae_valid")
    if not os.path.exists(os.path.join(out, "evaluation.json")):
        subprocess.run(["stableaudio-jax", "evaluate", "--vae", os.path.join(workdir, "vae", "model"), "--data",
                        os.path.join(workdir, "demo_data"), "--split", "valid", "--clips", str(VALID_CLIPS),
                        "--no-baselines", "--no-progress", "--out", out], check=True)
    return _read(os.path.join(out, "evaluation.json"))["sections"]["autoencoder reconstruction"]["trained VAE"]


def _read(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def summarize(workdir: str) -> dict:
    """One rate's row: the rate the VAE actually trained with (its run's config), the quickstart's stage times,
    and the test-split evaluation's reconstruction, prompt adherence and timing rows."""
    quickstart = _read(os.path.join(workdir, "quickstart.json"))["runs"]["dit"]
    vae_config = _read(os.path.join(workdir, "vae", "config.json"))
    sections = _read(os.path.join(workdir, "evaluation", "dit", "evaluation.json"))["sections"]
    adherence = sections["prompt adherence"]
    return {"vae_lr": vae_config["training"]["gen_optimizer"]["lr"], "dit_grad_norm": dit_grad_norms(workdir),
            "stage_seconds": quickstart["stage_seconds"], "total_seconds": quickstart["total_seconds"],
            "test": {"vae": sections["autoencoder reconstruction"]["trained VAE"],
                     "dit": adherence["trained model"], "through_vae": adherence["real audio through the VAE"],
                     "untrained": adherence["untrained model"], "timing": sections["timing control"]["trained model"]}}


def dit_grad_norms(workdir: str) -> dict:
    """The DiT's gradient norm at its logged steps: whether cpu-long's other change (clipping at norm 1) would act
    on this preset at all."""
    from common import spread
    with open(os.path.join(workdir, "dit", "metrics.jsonl"), encoding="utf-8") as f:
        norms = [row["train/grad_norm"] for row in map(json.loads, f) if "train/grad_norm" in row]
    return {"logged_steps": len(norms), **spread(norms)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="one quickstart workdir per rate: <workdir>/lr_<rate>")
    parser.add_argument("--rates", default="2e-3,5e-4")
    parser.add_argument("--out", default="docs/results/cpu_preset_vae_lr.json")
    args = parser.parse_args(argv)
    from common import environment, write_report
    report = {"benchmark": "cpu preset, VAE learning rate", "environment": environment(with_torch=False), "runs": {}}
    for text in args.rates.split(","):
        workdir = os.path.join(args.workdir, f"lr_{text}")
        finished = os.path.exists(os.path.join(workdir, "evaluation", "dit", "evaluation.json"))
        wall = None if finished else run_quickstart(workdir, float(text))
        row = summarize(workdir)
        row["valid_vae"] = evaluate_vae_on_valid(workdir)
        row["wall_seconds_this_invocation"] = wall
        report["runs"][text] = row
    if any(row["wall_seconds_this_invocation"] is None for row in report["runs"].values()):
        report["note"] = ("runs with wall_seconds_this_invocation null were read from finished workdirs: their "
                          "times are their own runs' (stage_seconds); the environment is this invocation's")
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
