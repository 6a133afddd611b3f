#!/usr/bin/env python3
"""GKE TPU slices through xpk: the same training command as ``tpu_vm.py``, as an xpk workload.

    python launch/xpk.py --cluster my-cluster --workload sa-sao --tpu-type v5p-128 --num-slices 2 \\
        --log-dir gs://my-bucket/logs create \\
        stableaudio-jax train --config configs/dit.py:sao --data gs://my-bucket/latents --workdir gs://my-bucket/sao
    python launch/xpk.py --cluster my-cluster --workload sa-sao list
    python launch/xpk.py --cluster my-cluster --workload sa-sao delete

``create`` runs ``xpk workload create``: xpk layers this folder (``--script-dir launch``) onto
``--base-docker-image`` (``python:3.12``: Debian with git and curl) at ``/app`` and starts one container per TPU
VM of every slice, each running the command below; a JobSet restarts the whole workload (up to
``--max-restarts``) when a pod fails with one of xpk's restart codes (42, 127–255). The container command is the
TPU VM path's worker steps (``launch/tpu_worker.sh``): ``setup`` (uv, a Python 3.12 environment with ``jax[tpu]``
and ``--package``, verified on TPU), ``check-log-dir`` (after setup: a bare image has no gcloud, so the copies use
the environment's gcsfs), then ``main`` in the foreground — its output goes to the container's log (Cloud
Logging) and, with ``--log-dir``, to ``<log-dir>/<workload>/slice-<j>/worker-<i>.log`` as it grows; a SIGTERM
(preemption, node drain, ``delete``) is passed on, the trainers save a checkpoint, and the container exits 42 so
that the JobSet restarts it and the run resumes (exiting 0 would mark the slice's Job complete). Environment
variables (``--env``) go through xpk's own ``--env``. ``list`` / ``delete`` are ``xpk workload list`` /
``delete``. Every action takes ``--dry-run``: the exact xpk command, nothing run. Standard library only.
"""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys

from tpu_vm import HERE, WORKER_SCRIPT, check_log_dir, check_python, default_package, shown_path

CONTAINER_SCRIPT = f"/app/{WORKER_SCRIPT.name}"  # where xpk's image build puts --script-dir's files
RESTART = "42"  # xpk restarts a workload whose container exits 42 (or 127-255); it fails it on any other code
ACTIONS = ("create", "list", "delete")


def container_command(args: argparse.Namespace, command: list[str]) -> str:
    """The shell line every container runs: set up, check the log folder, then the command (``exec``: xpk's
    SIGTERM reaches the worker script, which passes it on)."""
    node = ["--node", f"{args.workload}/slice-{{slice}}"]
    copies = ["--log-dir", args.log_dir, "--copy-every", str(args.copy_every)] if args.log_dir else []
    steps = [[CONTAINER_SCRIPT, "setup", *node, "--python", args.python, "--package", args.package]]
    if args.log_dir:
        steps.append([CONTAINER_SCRIPT, "check-log-dir", *node, "--log-dir", args.log_dir])
    run = [CONTAINER_SCRIPT, "main", *node, *copies, "--echo", "--signal-exit", RESTART, "--", *command]
    return " && ".join([*(f"bash {shlex.join(s)}" for s in steps), f"exec bash {shlex.join(run)}"])


def where(args: argparse.Namespace) -> list[str]:
    return ([f"--project={args.project}"] if args.project else []) + ([f"--zone={args.zone}"] if args.zone else [])


def create(args: argparse.Namespace, command: list[str]) -> list[str]:
    return ["xpk", "workload", "create", f"--cluster={args.cluster}", f"--workload={args.workload}",
            f"--tpu-type={args.tpu_type}", f"--num-slices={args.num_slices}", *where(args),
            f"--base-docker-image={args.base_docker_image}", f"--script-dir={shown_path(HERE)}",
            f"--max-restarts={args.max_restarts}", f"--termination-grace-period-seconds={args.grace}",
            *(f"--env={kv}" for kv in args.env), f"--command={container_command(args, command)}"]


def list_workloads(args: argparse.Namespace) -> list[str]:
    return ["xpk", "workload", "list", f"--cluster={args.cluster}", f"--filter-by-job={args.workload}", *where(args)]


def delete(args: argparse.Namespace) -> list[str]:
    return ["xpk", "workload", "delete", f"--cluster={args.cluster}", f"--workload={args.workload}", *where(args)]


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster", required=True, help="the GKE cluster (made by `xpk cluster create`)")
    p.add_argument("--workload", required=True, help="the workload's name (lower case, digits and '-')")
    p.add_argument("--project", help="default: gcloud's configured project")
    p.add_argument("--zone", help="default: gcloud's configured zone")
    p.add_argument("--tpu-type", help="create: the slice type, e.g. v5p-128, v6e-256")
    p.add_argument("--num-slices", type=int, default=1, help="create: multi-slice, this many slices")
    p.add_argument("--base-docker-image", default="python:3.12",
                   help="create: the image xpk layers launch/ onto (needs bash, curl and git)")
    p.add_argument("--package", help="create: requirement installed in every container (default: "
                                     "'stableaudio-jax[tpu] @ git+REPOSITORY'; pin a commit)")
    p.add_argument("--python", type=check_python, default="3.12", help="create: the containers' Python (>= 3.11)")
    p.add_argument("--log-dir", type=check_log_dir, help="create: gs://BUCKET/PATH for each worker's log")
    p.add_argument("--copy-every", type=int, default=60, help="seconds between copies of the log to --log-dir")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="set in every container")
    p.add_argument("--max-restarts", type=int, default=100, help="create: JobSet restarts (preemptions)")
    p.add_argument("--grace", type=int, default=300,
                   help="create: seconds a stopping pod gets to checkpoint (--termination-grace-period-seconds)")
    p.add_argument("--dry-run", action="store_true", help="print the xpk command; run nothing")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("command", nargs=argparse.REMAINDER, help="create: the command every container runs")
    args = p.parse_args(argv)
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", args.workload):
        p.error(f"--workload {args.workload!r}; expected lower-case letters, digits and '-' (a Kubernetes name)")
    for kv in args.env:
        if "=" not in kv:
            p.error(f"--env {kv!r}; expected KEY=VALUE")
    if args.action == "create":
        if not args.command:
            p.error("create: expected the command to run after it")
        if not args.tpu_type:
            p.error("create: --tpu-type is required (e.g. v5p-128, v6e-256)")
        if args.num_slices < 1:
            p.error(f"--num-slices is {args.num_slices}; expected at least 1")
        if args.copy_every < 1:
            p.error(f"--copy-every is {args.copy_every}; expected at least 1")
        args.package = args.package or default_package()
    elif args.command:
        p.error(f"{args.action}: takes no command (got {shlex.join(args.command)!r})")
    return args, args.command


def main(argv: list[str] | None = None) -> int:
    args, command = parse(sys.argv[1:] if argv is None else argv)
    cmd = {"create": lambda: create(args, command), "list": lambda: list_workloads(args),
           "delete": lambda: delete(args)}[args.action]()
    print(shlex.join(cmd), flush=True)
    return 0 if args.dry_run else subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
