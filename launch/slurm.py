#!/usr/bin/env python3
"""SLURM GPU clusters: write the sbatch script for one command on N nodes and submit it.

    python launch/slurm.py --nodes 4 --gpus-per-node 8 --time 48:00:00 --partition gpu \\
        stableaudio-jax train --config configs/dit.py:sao --data /shared/latents --workdir /shared/runs/sao

``--per gpu`` (default) starts one process per GPU (``--ntasks-per-node`` = GPUs; JAX gives each its own GPU);
``--per node`` starts one process per node that drives all of its GPUs. Either way ``srun`` sets SLURM_PROCID /
SLURM_NTASKS / SLURM_STEP_NODELIST, from which ``jax.distributed.initialize`` (called by every trainer) finds the
coordinator (the first node, a port derived from the job id) — nothing to configure. With one process per node
the script also sets ``STABLEAUDIO_LOCAL_DEVICE_IDS`` to all of the node's GPUs: JAX's SLURM detection would
otherwise give each process only GPU ``SLURM_LOCALID`` = 0.

Faults: ``--kill-on-bad-exit`` makes a dead task end the whole step (no survivor waits in a collective);
``--signal=TERM@<s>`` sends SIGTERM that many seconds before the time limit, so the trainers checkpoint and exit;
``--requeue`` puts a preempted or failed-node job back in the queue, and the same command resumes from the last
checkpoint in ``--workdir``. ``--container`` runs the tasks in a container through pyxis/enroot (``srun
--container-image``). ``--dry-run`` prints the script and the sbatch command. Standard library only.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path


def directives(a: argparse.Namespace) -> list[str]:
    tasks = a.gpus_per_node if a.per == "gpu" else 1
    lines = [f"--job-name={a.job_name}", f"--nodes={a.nodes}", f"--ntasks-per-node={tasks}",
             f"--gpus-per-node={a.gpus_per_node}", f"--cpus-per-task={a.cpus_per_task}", f"--time={a.time}",
             f"--output={a.log_dir}/%x-%j.out", f"--signal=TERM@{a.term_before}", "--requeue"]
    lines += [f"--partition={a.partition}"] if a.partition else []
    lines += [f"--account={a.account}"] if a.account else []
    return [f"#SBATCH {line}" for line in lines + a.sbatch]


def srun_line(a: argparse.Namespace, command: list[str]) -> str:
    # One process per GPU needs no binding: every task sees the node's GPUs and JAX's SLURM detection gives
    # process SLURM_LOCALID the GPU of that index.
    srun = ["srun", "--kill-on-bad-exit=1"]
    if a.container:
        srun.append(f"--container-image={a.container}")
        srun += [f"--container-mounts={m}" for m in a.mount]
    return shlex.join(srun + command)


def script(a: argparse.Namespace, command: list[str]) -> str:
    exports = [f"export {shlex.quote(kv)}" for kv in a.env]
    if a.per == "node":
        exports.append(f"export STABLEAUDIO_LOCAL_DEVICE_IDS={','.join(map(str, range(a.gpus_per_node)))}")
    started = ('echo "job ${SLURM_JOB_ID}: ${SLURM_NTASKS} processes on ${SLURM_JOB_NODELIST}, '
               'restart ${SLURM_RESTART_COUNT:-0}"')
    body = ["#!/bin/bash", *directives(a), "set -euo pipefail", *exports, started, srun_line(a, command)]
    return "\n".join(body) + "\n"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--per", choices=("gpu", "node"), default="gpu", help="one process per GPU or per node")
    p.add_argument("--cpus-per-task", type=int, default=8)
    p.add_argument("--time", default="24:00:00", help="wall-clock limit (HH:MM:SS or D-HH:MM:SS)")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--job-name", default="stableaudio-jax")
    p.add_argument("--log-dir", default="logs", help="where SLURM writes <job-name>-<id>.out")
    p.add_argument("--term-before", type=int, default=300,
                   help="seconds before the time limit at which the tasks get SIGTERM (checkpoint and exit)")
    p.add_argument("--container", help="container image for pyxis (srun --container-image)")
    p.add_argument("--mount", action="append", default=[], help="container mount SRC:DST (repeatable)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="exported in the job")
    p.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="any other sbatch option, e.g. --sbatch=--exclusive (repeatable)")
    p.add_argument("--script", default="stableaudio-jax.sbatch", help="where the script is written")
    p.add_argument("--dry-run", action="store_true", help="print the script and the sbatch command; submit nothing")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command every process runs")
    a = p.parse_args(argv)
    for name in ("nodes", "gpus_per_node", "cpus_per_task"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} is {getattr(a, name)}; expected at least 1")
    for kv in a.env:
        if "=" not in kv:
            p.error(f"--env {kv!r}; expected KEY=VALUE")
    if not a.command or a.command[0].startswith("-"):
        p.error("expected the command to run after the options, e.g. `stableaudio-jax train --config ...`"
                + (f" (got the option {a.command[0]!r} there: options go before the command)" if a.command else ""))
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    text = script(a, a.command)
    submit = ["sbatch", a.script]
    if a.dry_run:
        print(f"# {a.script}\n{text}\n{shlex.join(submit)}")
        return 0
    Path(a.script).write_text(text)
    Path(a.log_dir).mkdir(parents=True, exist_ok=True)
    print(f"wrote {a.script}; {shlex.join(submit)}", flush=True)
    return subprocess.call(submit)


if __name__ == "__main__":
    sys.exit(main())
