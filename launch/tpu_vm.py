#!/usr/bin/env python3
"""Cloud TPU VM slices: create, set up every worker, run one command on all of them, and keep a spot run alive.

    python launch/tpu_vm.py --name sa-pod --zone us-east5-a --accelerator v5p-128 --spot create
    python launch/tpu_vm.py --name sa-pod --zone us-east5-a --package 'stableaudio-jax @ git+https://...@<commit>' setup
    python launch/tpu_vm.py --name sa-pod --zone us-east5-a run stableaudio-jax train --config configs/dit.py:sao \\
        --data gs://my-bucket/latents --workdir gs://my-bucket/runs/sao
    python launch/tpu_vm.py --name sa-pod --zone us-east5-a --accelerator v5p-128 --spot recover stableaudio-jax ...

Slices are queued resources (`gcloud compute tpus queued-resources`); ``--slices N`` asks for a multi-slice one
whose nodes are ``<name>-0 … <name>-(N-1)`` and whose MEGASCALE_* variables the TPU runtime sets, so the same
command runs unchanged. ``run`` starts the command on every worker of every slice (``tpu-vm ssh --worker=all``),
keeps a copy of each worker's output in ``~/stableaudio-jax.log`` and returns the first failure's exit code.
``recover`` is the spot / preemptible loop: create (unless the slice is up), set up, run; when the run fails
because the slice was preempted, delete it, queue it again and re-run the same command, which resumes from the last
checkpoint in ``--workdir`` — until the command succeeds, fails on a healthy slice, or ``--max-restarts`` is used.
``stop`` sends SIGTERM (the trainers save a checkpoint and exit), ``logs`` shows the last lines of every worker's log.
Every action takes ``--dry-run``: the exact gcloud commands, nothing run. Standard library only.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time

RUNTIME_VERSIONS = {"v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite", "v5e": "v2-alpha-tpuv5-lite",
                    "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
LOG = "~/stableaudio-jax.log"
PREEMPTED = {"SUSPENDING", "SUSPENDED", "FAILED", "PREEMPTED"}  # queued-resource states a run cannot survive
ACTIONS = ("create", "setup", "run", "logs", "stop", "delete", "recover")


class Gcloud:
    """Builds the gcloud commands for one queued resource and runs them (or, in a dry run, prints them)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])

    def nodes(self) -> list[str]:
        a = self.args
        return [a.name] if a.slices == 1 else [f"{a.name}-{i}" for i in range(a.slices)]

    def create(self) -> list[str]:
        a = self.args
        accelerator = _require(a.accelerator, "--accelerator", "e.g. v5p-128, v5litepod-64, v6e-256")
        runtime = a.runtime_version or runtime_for(accelerator)
        cmd = ["gcloud", "compute", "tpus", "queued-resources", "create", a.name, *self.where,
               f"--accelerator-type={accelerator}", f"--runtime-version={runtime}"]
        cmd += [f"--node-id={a.name}"] if a.slices == 1 else [f"--node-count={a.slices}", f"--node-prefix={a.name}"]
        return cmd + (["--spot"] if a.spot else [])

    def state(self) -> list[str]:
        return ["gcloud", "compute", "tpus", "queued-resources", "describe", self.args.name, *self.where,
                "--format=value(state.state)"]

    def delete(self) -> list[str]:
        return ["gcloud", "compute", "tpus", "queued-resources", "delete", self.args.name, *self.where,
                "--force", "--quiet"]

    def ssh(self, node: str, remote: str) -> list[str]:
        return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", node, *self.where, "--worker=all",
                f"--command={remote}"]

    def on_all(self, remote: str) -> list[list[str]]:
        return [self.ssh(node, remote) for node in self.nodes()]


def runtime_for(accelerator: str) -> str:
    generation = accelerator.split("-")[0]
    if generation not in RUNTIME_VERSIONS:
        raise SystemExit(f"--accelerator {accelerator!r}: unknown TPU generation {generation!r}; expected one of "
                         f"{sorted(RUNTIME_VERSIONS)} (or pass --runtime-version)")
    return RUNTIME_VERSIONS[generation]


def _require(value, flag: str, example: str):
    if not value:
        raise SystemExit(f"{flag} is required for this action ({example})")
    return value


def setup_script(args: argparse.Namespace) -> str:
    """What every worker runs once: the same Python environment everywhere."""
    steps = ["set -e", "python3 -m pip install --upgrade pip",
             f"python3 -m pip install 'jax[tpu]' {shlex.quote(args.package)}"]
    return " && ".join(steps)


def run_script(args: argparse.Namespace, command: list[str]) -> str:
    """What every worker runs for ``run``: the environment, then the command with its output kept in the log."""
    exports = [f"export {shlex.quote(kv)}" for kv in args.env]
    # pipefail: the worker's exit status is the command's, not tee's
    return "; ".join(["set -o pipefail", *exports, f"{shlex.join(command)} 2>&1 | tee -a {LOG}"])


class Launcher:
    def __init__(self, args: argparse.Namespace):
        self.args, self.g = args, Gcloud(args)

    def show(self, cmd: list[str]) -> None:
        print(shlex.join(cmd), flush=True)

    def call(self, cmd: list[str]) -> int:
        self.show(cmd)
        return 0 if self.args.dry_run else subprocess.call(cmd)

    def parallel(self, cmds: list[list[str]]) -> int:
        """One ssh per slice at once; the first non-zero exit code."""
        for cmd in cmds:
            self.show(cmd)
        if self.args.dry_run:
            return 0
        codes = [p.wait() for p in [subprocess.Popen(cmd) for cmd in cmds]]
        return next((c for c in codes if c), 0)

    def state(self) -> str:
        if self.args.dry_run:
            self.show(self.g.state())
            return "ACTIVE"
        out = subprocess.run(self.g.state(), capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else "NOT_FOUND"

    def wait_active(self) -> None:
        while (state := self.state()) != "ACTIVE":
            if state in PREEMPTED or state == "NOT_FOUND":
                raise SystemExit(f"queued resource {self.args.name!r} is {state} while waiting for it to start")
            print(f"[launch] {self.args.name}: {state}; checking again in {self.args.poll}s", flush=True)
            time.sleep(self.args.poll)

    def up(self) -> int:
        code = self.call(self.g.create())
        if code == 0:
            self.wait_active()
        return code

    def recover(self, command: list[str]) -> int:
        """Run until the command succeeds; re-create the slice after each preemption."""
        a = self.args
        if self.args.dry_run or self.state() == "NOT_FOUND":
            if self.up() or self.parallel(self.g.on_all(setup_script(a))):
                return 1
        for attempt in range(a.max_restarts + 1):
            code = self.parallel(self.g.on_all(run_script(a, command)))
            if code == 0 or a.dry_run:
                return code
            state = self.state()
            if state not in PREEMPTED:
                print(f"[launch] the command failed with {code} on a healthy slice ({state}): not retrying",
                      file=sys.stderr)
                return code
            print(f"[launch] slice {state} (restart {attempt + 1} of {a.max_restarts}): re-creating it", flush=True)
            self.call(self.g.delete())
            if self.up() or self.parallel(self.g.on_all(setup_script(a))):
                return 1
        print(f"[launch] gave up after {a.max_restarts} restarts", file=sys.stderr)
        return 1


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="queued resource (and node / node prefix) name")
    p.add_argument("--zone", required=True)
    p.add_argument("--project", help="default: gcloud's configured project")
    p.add_argument("--accelerator", help="slice type for create / recover, e.g. v5p-128, v5litepod-64, v6e-256")
    p.add_argument("--slices", type=int, default=1, help="multi-slice: this many slices of --accelerator")
    p.add_argument("--runtime-version", help="TPU VM image (default: the generation's, "
                                             f"{', '.join(f'{k}: {v}' for k, v in RUNTIME_VERSIONS.items())})")
    p.add_argument("--spot", action="store_true", help="spot capacity (preemptible; use `recover`)")
    p.add_argument("--package", default="stableaudio-jax",
                   help="pip requirement installed on every worker (pin a version or a commit: every host must run "
                        "the same code)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="exported on every worker before the command (repeatable)")
    p.add_argument("--max-restarts", type=int, default=100, help="recover: re-creations after preemption")
    p.add_argument("--poll", type=int, default=60, help="seconds between state checks while a slice is queued")
    p.add_argument("--dry-run", action="store_true", help="print the gcloud commands; run nothing")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("command", nargs=argparse.REMAINDER, help="run / recover: the command every worker runs")
    args = p.parse_args(argv)
    if args.slices < 1:
        p.error(f"--slices is {args.slices}; expected at least 1")
    for kv in args.env:
        if "=" not in kv:
            p.error(f"--env {kv!r}; expected KEY=VALUE")
    needs_command = args.action in ("run", "recover")
    if needs_command != bool(args.command):
        p.error(f"{args.action}: " + ("expected the command to run after it" if needs_command
                                      else f"takes no command (got {shlex.join(args.command)!r})"))
    return args, args.command


def main(argv: list[str] | None = None) -> int:
    args, command = parse(sys.argv[1:] if argv is None else argv)
    launcher = Launcher(args)
    g = launcher.g
    if args.action == "create":
        return launcher.up()
    if args.action == "delete":
        return launcher.call(g.delete())
    if args.action == "setup":
        return launcher.parallel(g.on_all(setup_script(args)))
    if args.action == "run":
        return launcher.parallel(g.on_all(run_script(args, command)))
    if args.action == "logs":
        return launcher.parallel(g.on_all(f"tail -n 50 {LOG}"))
    if args.action == "stop":  # SIGTERM: the trainers save a checkpoint at the current step and exit
        # '[b]in/...' matches the console script's process, not this shell's own command line nor the log's tee
        return launcher.parallel(g.on_all("pkill -TERM -f '[b]in/stableaudio-jax ' || true"))
    return launcher.recover(command)


if __name__ == "__main__":
    sys.exit(main())
