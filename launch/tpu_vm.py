#!/usr/bin/env python3
"""Cloud TPU VM slices: create, set up every worker, start one command on all of them detached, follow it, and keep
a spot run alive.

    python launch/tpu_vm.py --name sa-pod --zone us-east5-a --accelerator v5p-128 --spot create
    python launch/tpu_vm.py --name sa-pod --zone us-east5-a --log-dir gs://my-bucket/logs setup
    python launch/tpu_vm.py --name sa-pod --zone us-east5-a --log-dir gs://my-bucket/logs run \\
        stableaudio-jax train --config configs/dit.py:sao --data gs://my-bucket/latents --workdir gs://my-bucket/sao
    python launch/tpu_vm.py --name sa-pod --zone us-east5-a logs --follow --worker 0
    python launch/tpu_vm.py --name sa-pod --zone us-east5-a --accelerator v5p-128 --spot recover stableaudio-jax ...

Slices are queued resources (``gcloud compute tpus queued-resources``); ``--slices N`` asks for a multi-slice one
whose nodes are ``<name>-0 … <name>-(N-1)`` and whose MEGASCALE_* variables the TPU runtime sets, so the same
command runs unchanged. Every worker-side step is ``launch/tpu_worker.sh``, copied to each worker as
``~/stableaudio-jax-worker.sh`` (``tpu-vm scp --worker=all``) and called over ``tpu-vm ssh --worker=all``.

``setup``: TPU VM images ship an older ``python3`` than the package's 3.11, so each worker gets its own Python:
``uv`` (from PyPI with the image's python3, else astral's installer) creates ``~/stableaudio-venv`` with a
prebuilt CPython ``--python`` (3.12) and installs ``jax[tpu]`` and ``--package`` into it. uv rather than the
deadsnakes PPA (root, apt locks held by a fresh VM's unattended upgrades, Ubuntu releases only), pyenv (compiles
Python on every worker) or conda (large, slow): no root, seconds per worker, the same build on every worker and
image. The environment is built in a new folder, checked (its Python >= 3.11, ``jax.devices()`` on TPU) and only
then switched in (a symlink renamed); a failed step removes it and prints one line naming the worker and the step.

``run`` starts the command detached (``setsid nohup``: a session of its own, so a closed laptop or ssh connection
cannot end it) and returns at once; each worker appends its output to ``~/stableaudio-jax.log`` and, with
``--log-dir gs://…``, copies it to ``<log-dir>/<node>/worker-<i>.log`` every ``--copy-every`` seconds and at the
end (a re-created VM continues that copy). setsid rather than ``systemd-run --user`` (needs lingering enabled for
the user, else the unit dies at logout) or a system unit (root, and logs in journald, not a file that is copied).
``setup`` and ``run`` first check that every worker can write ``--log-dir``. ``logs`` prints the last lines of
each worker's log (``--follow``: tail -F), ``status`` each worker's state, ``stop`` sends SIGTERM to the run (the
trainers save a checkpoint and exit). ``recover`` is the spot / preemptible loop: create (unless the slice is up),
set up, start, then poll the queued resource's state and each worker's status every ``--poll`` seconds; when the
slice is preempted, delete it, queue it again, set up and start the same command, which resumes from the last
checkpoint — until the command succeeds, fails or is stopped on a healthy slice, or ``--max-restarts`` is used.
Every action takes ``--dry-run``: the exact commands, nothing run. Standard library only.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

RUNTIME_VERSIONS = {"v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite", "v5e": "v2-alpha-tpuv5-lite",
                    "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
PREEMPTED = {"SUSPENDING", "SUSPENDED", "FAILED", "PREEMPTED"}  # queued-resource states a run cannot survive
ACTIONS = ("create", "setup", "run", "logs", "status", "stop", "delete", "recover")
HERE = Path(__file__).resolve().parent
WORKER_SCRIPT = HERE / "tpu_worker.sh"
REMOTE_SCRIPT = "stableaudio-jax-worker.sh"  # in each worker's home
PACKAGE_INIT = HERE.parent / "stableaudio_jax" / "__init__.py"
# one line per worker from `tpu_worker.sh status`
STATUS = re.compile(r"^stableaudio-jax status: .*: (running|exited (-?\d+)|stopped (-?\d+)|died|not started)",
                    re.MULTILINE)


def repository() -> str:
    """REPOSITORY from stableaudio_jax/__init__.py, read as text: the launcher runs where the package is not
    installed."""
    try:
        text = PACKAGE_INIT.read_text(encoding="utf-8")
    except OSError as e:
        raise SystemExit(f"cannot read the repository's address from {PACKAGE_INIT} ({e}); pass --package") from e
    found = re.search(r"^REPOSITORY\s*=\s*[\"']([^\"']+)[\"']", text, re.MULTILINE)
    if not found:
        raise SystemExit(f"{PACKAGE_INIT} has no line REPOSITORY = \"https://...\"; pass --package")
    return found.group(1)


def default_package() -> str:
    return f"stableaudio-jax[tpu] @ git+{repository()}"


def check_python(value: str) -> str:
    parts = value.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts) or tuple(map(int, parts[:2])) < (3, 11):
        raise argparse.ArgumentTypeError(f"{value!r}; expected a Python version 3.11 or newer, e.g. 3.12")
    return value


def check_log_dir(value: str) -> str:
    if not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]{1,221}[a-z0-9](/.*)?", value):
        raise argparse.ArgumentTypeError(f"{value!r}; expected a Cloud Storage folder, gs://BUCKET/PATH")
    return value.rstrip("/")


def shown_path(path: Path) -> str:
    """A local path as short as it can be said from here (the dry runs print the same text in any checkout)."""
    return os.path.relpath(path)


class Gcloud:
    """Builds the gcloud commands for one queued resource."""

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

    def upload(self, node: str) -> list[str]:
        return ["gcloud", "compute", "tpus", "tpu-vm", "scp", shown_path(WORKER_SCRIPT), f"{node}:{REMOTE_SCRIPT}",
                *self.where, "--worker=all"]

    def worker(self, node: str, action: str, options: list[str], worker: str = "all") -> list[str]:
        """``tpu_worker.sh ACTION OPTIONS`` on the node's workers (`~` left for the worker's shell to expand)."""
        remote = " ".join([f"bash ~/{REMOTE_SCRIPT}", action, *map(shlex.quote, ["--node", node, *options])])
        return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", node, *self.where, f"--worker={worker}",
                f"--command={remote}"]

    def on_all(self, action: str, options: list[str], worker: str = "all") -> list[list[str]]:
        return [self.worker(node, action, options, worker) for node in self.nodes()]


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


def start_options(args: argparse.Namespace, command: list[str]) -> list[str]:
    """tpu_worker.sh start's options: where the log goes, then the command (``env K=V`` in front for --env)."""
    copies = ["--log-dir", args.log_dir, "--copy-every", str(args.copy_every)] if args.log_dir else []
    return [*copies, "--", *(["env", *args.env] if args.env else []), *command]


def judge(statuses: list[tuple[str, int]]) -> tuple[str, int] | None:
    """The run's outcome from every worker's (state, code), or None while any worker still runs."""
    if not statuses or any(state == "running" for state, _ in statuses):
        return None
    if all(state == "exited" and code == 0 for state, code in statuses):
        return "done", 0
    if any(state == "stopped" for state, _ in statuses):
        return "stopped", next(code for state, code in statuses if state == "stopped")
    return "failed", next((code for state, code in statuses if state == "exited" and code), 1)


class Launcher:
    def __init__(self, args: argparse.Namespace):
        self.args, self.g = args, Gcloud(args)

    def show(self, cmd: list[str]) -> None:
        print(shlex.join(cmd), flush=True)

    def call(self, cmd: list[str]) -> int:
        self.show(cmd)
        return 0 if self.args.dry_run else subprocess.call(cmd)

    def parallel(self, cmds: list[list[str]]) -> list[int]:
        """One command per slice at once; each one's exit code."""
        for cmd in cmds:
            self.show(cmd)
        if self.args.dry_run:
            return [0] * len(cmds)
        return [p.wait() for p in [subprocess.Popen(cmd) for cmd in cmds]]

    def steps(self, *steps: tuple[str, list[list[str]]]) -> int:
        """Each step on every slice at once, the next only when all succeeded; the first failure's exit code."""
        for name, cmds in steps:
            codes = self.parallel(cmds)
            failed = [node for node, code in zip(self.g.nodes(), codes) if code]
            if failed:
                print(f"[launch] {name} failed on {', '.join(failed)} (exit {max(codes)}): the workers' own lines "
                      "above say which step and what to do", file=sys.stderr, flush=True)
                return max(codes)
        return 0

    def prepare(self) -> list[tuple[str, list[list[str]]]]:
        """The steps before setup and start: the worker script onto every worker, then the --log-dir check."""
        a, nodes = self.args, self.g.nodes()
        check = [("check --log-dir", self.g.on_all("check-log-dir", ["--log-dir", a.log_dir]))] if a.log_dir else []
        return [("upload the worker script", [self.g.upload(node) for node in nodes]), *check]

    def setup(self) -> int:
        a = self.args
        return self.steps(*self.prepare(),
                          ("setup", self.g.on_all("setup", ["--python", a.python, "--package", a.package])))

    def start(self, command: list[str], prepared: bool = False) -> int:
        """Start the command detached; ``prepared``: setup has just run prepare()."""
        return self.steps(*([] if prepared else self.prepare()),
                          ("start", self.g.on_all("start", start_options(self.args, command))))

    def follow_hint(self) -> None:
        where = ["--name", self.args.name, "--zone", self.args.zone]
        where += ["--project", self.args.project] if self.args.project else []
        print(f"# started detached; follow it: {shlex.join(['python', shown_path(Path(__file__)), *where])} "
              "logs --follow --worker 0", flush=True)

    def state(self) -> str:
        if self.args.dry_run:
            self.show(self.g.state())
            return "ACTIVE"
        out = subprocess.run(self.g.state(), capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.strip()
        # only an answer that the resource does not exist means it is gone: a failed call is no reason to re-create
        return "NOT_FOUND" if "NOT_FOUND" in out.stderr or "not found" in out.stderr.lower() else "UNKNOWN"

    def preempted(self) -> bool:
        """Whether the slice is gone; asked twice, --poll apart: the API notices a preemption after the VMs do."""
        for attempt in range(2):
            if attempt:
                time.sleep(self.args.poll)
            if (state := self.state()) in PREEMPTED or state == "NOT_FOUND":
                return True
        return False

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

    def statuses(self) -> list[tuple[str, int]] | None:
        """Every worker's (state, exit code) from `tpu_worker.sh status`; None when a worker did not answer."""
        cmds = self.g.on_all("status", [])
        if self.args.dry_run:
            for cmd in cmds:
                self.show(cmd)
            return []
        outs = [subprocess.run(cmd, capture_output=True, text=True) for cmd in cmds]
        if any(out.returncode for out in outs):
            return None
        return [(m.group(1).split()[0], int(m.group(2) or m.group(3) or 0))
                for out in outs for m in STATUS.finditer(out.stdout)]

    def wait_run(self) -> tuple[str, int]:
        """Poll the slice's state and every worker's status until the run has ended on all of them:
        ('done' | 'failed' | 'stopped' | 'preempted', exit code)."""
        unanswered = 0
        while True:
            if self.state() in PREEMPTED | {"NOT_FOUND"}:
                return "preempted", 1
            statuses = self.statuses()
            if self.args.dry_run:
                return "done", 0
            unanswered = unanswered + 1 if statuses is None else 0
            if unanswered >= 5:  # an ACTIVE slice whose workers do not answer ssh: not something to wait out
                return "failed", 255
            if statuses is not None and (outcome := judge(statuses)):
                return outcome
            time.sleep(self.args.poll)

    def recover(self, command: list[str]) -> int:
        """Run until the command succeeds; re-create the slice after each preemption."""
        a = self.args
        prepared = a.dry_run or self.state() == "NOT_FOUND"
        if prepared and (self.up() or self.setup()):
            return 1
        restarts = 0
        while True:
            code = self.start(command, prepared)
            if code == 0 and restarts == 0:
                self.follow_hint()
            outcome, code = self.wait_run() if code == 0 else ("failed", code)
            if outcome == "done":
                return code
            if outcome != "preempted" and not self.preempted():
                print(f"[launch] the run {outcome} (exit {code}) on a healthy slice: not restarting it"
                      + ("; run recover again to resume" if outcome == "stopped" else ""), file=sys.stderr)
                return code
            if restarts == a.max_restarts:
                print(f"[launch] gave up after {a.max_restarts} restarts", file=sys.stderr)
                return 1
            restarts += 1
            print(f"[launch] slice preempted (restart {restarts} of {a.max_restarts}): re-creating it", flush=True)
            self.call(self.g.delete())
            if self.up() or self.setup():
                return 1
            prepared = True


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
    p.add_argument("--package", help="requirement installed on every worker (default: 'stableaudio-jax[tpu] @ "
                                     "git+REPOSITORY', REPOSITORY from stableaudio_jax/__init__.py; pin a commit: "
                                     "every host must run the same code)")
    p.add_argument("--python", type=check_python, default="3.12", help="the workers' Python (3.11 or newer)")
    p.add_argument("--log-dir", type=check_log_dir, help="gs://BUCKET/PATH: each worker's log is copied to "
                                                         "<log-dir>/<node>/worker-<i>.log as it grows")
    p.add_argument("--copy-every", type=int, default=60, help="seconds between copies of the log to --log-dir")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set on every worker for the command (repeatable)")
    p.add_argument("--worker", default="all", help="logs / status / stop: one worker (0, 1, ...) or all")
    p.add_argument("--lines", type=int, default=50, help="logs: lines of each worker's log")
    p.add_argument("--follow", action="store_true", help="logs: keep printing as the log grows (Ctrl-C ends)")
    p.add_argument("--max-restarts", type=int, default=100, help="recover: re-creations after preemption")
    p.add_argument("--poll", type=int, default=60, help="seconds between state checks of a queued or running slice")
    p.add_argument("--dry-run", action="store_true", help="print the gcloud commands; run nothing")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("command", nargs=argparse.REMAINDER, help="run / recover: the command every worker runs")
    args = p.parse_args(argv)
    if args.action not in ("run", "recover") and args.command[:1] and args.command[0].startswith("-"):
        # options after an action that takes no command (`logs --follow`): read them as options
        at = len(argv) - len(args.command) - 1
        args = p.parse_args(argv[:at] + argv[at + 1:] + [argv[at]])
    if args.slices < 1:
        p.error(f"--slices is {args.slices}; expected at least 1")
    for kv in args.env:
        if "=" not in kv:
            p.error(f"--env {kv!r}; expected KEY=VALUE")
    if args.worker != "all" and not args.worker.isdigit():
        p.error(f"--worker {args.worker!r}; expected a worker index (0, 1, ...) or all")
    for flag, value, least in (("--copy-every", args.copy_every, 1), ("--lines", args.lines, 1),
                               ("--poll", args.poll, 0)):
        if value < least:
            p.error(f"{flag} is {value}; expected at least {least}")
    needs_command = args.action in ("run", "recover")
    if needs_command != bool(args.command):
        p.error(f"{args.action}: " + ("expected the command to run after it" if needs_command
                                      else f"takes no command (got {shlex.join(args.command)!r})"))
    if args.package is None and args.action in ("setup", "recover"):
        args.package = default_package()
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
        return launcher.setup()
    if args.action == "run":
        code = launcher.start(command)
        if code == 0:
            launcher.follow_hint()
        return code
    if args.action == "logs":
        options = ["--lines", str(args.lines)] + (["--follow"] if args.follow else [])
        try:
            return max(launcher.parallel(g.on_all("logs", options, args.worker)))
        except KeyboardInterrupt:  # the end of --follow: the run goes on
            return 130
    if args.action in ("status", "stop"):  # stop: SIGTERM; the trainers save a checkpoint and exit
        return max(launcher.parallel(g.on_all(args.action, [], args.worker)))
    return launcher.recover(command)


if __name__ == "__main__":
    sys.exit(main())
