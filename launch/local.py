#!/usr/bin/env python3
"""N processes of one command on this machine, wired together as one JAX multi-process run on 127.0.0.1.

    python launch/local.py --cpu-devices 4 2 stableaudio-jax train --config configs/dit.py:tiny --data synthetic \
        --workdir runs/x

(the launcher's options come before the process count; everything after it is the command).

Each process gets ``STABLEAUDIO_COORDINATOR`` / ``STABLEAUDIO_NUM_PROCESSES`` / ``STABLEAUDIO_PROCESS_ID`` (read by
``stableaudio_jax.parallel.distributed.initialize``) and, with ``--cpu-devices K``, K fake CPU devices: the same
entry point a TPU pod or a SLURM job runs, on a laptop. Output lines are prefixed with the process index. When
one process fails the others get SIGTERM (they checkpoint and stop) and the launcher exits with the failure's
code; SIGINT / SIGTERM sent to the launcher are passed to every process. Standard library only.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(base: dict[str, str], index: int, count: int, port: int, cpu_devices: int | None) -> dict[str, str]:
    """The environment of process ``index`` of ``count``."""
    env = dict(base)
    env.update(STABLEAUDIO_COORDINATOR=f"127.0.0.1:{port}", STABLEAUDIO_NUM_PROCESSES=str(count),
               STABLEAUDIO_PROCESS_ID=str(index))
    if cpu_devices:
        # replace any device-count flag the caller exported (tests export 8 for a single process)
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={cpu_devices}"])
        env["JAX_PLATFORMS"] = "cpu"
    return env


def describe(index: int, count: int, port: int, cpu_devices: int | None, command: list[str]) -> str:
    """One process's launch as a shell line (what --dry-run prints)."""
    names = ["STABLEAUDIO_COORDINATOR", "STABLEAUDIO_NUM_PROCESSES", "STABLEAUDIO_PROCESS_ID"]
    values = [f"127.0.0.1:{port}", str(count), str(index)]
    if cpu_devices:
        names += ["JAX_PLATFORMS", "XLA_FLAGS"]
        values += ["cpu", f"--xla_force_host_platform_device_count={cpu_devices}"]
    assignments = " ".join(f"{n}={shlex.quote(v)}" for n, v in zip(names, values))
    return f"{assignments} {shlex.join(command)}"


def _relay(stream, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


class Group:
    """The running processes: relays their output, stops the rest when one fails, forwards signals."""

    def __init__(self, commands: list[tuple[list[str], dict[str, str]]]):
        self.processes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True, bufsize=1) for cmd, env in commands]
        self.relays = [threading.Thread(target=_relay, args=(p.stdout, f"[process {i}] "), daemon=True)
                       for i, p in enumerate(self.processes)]
        for thread in self.relays:
            thread.start()

    def signal_all(self, signum: int) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signum)

    def wait(self, grace: float) -> int:
        """The first non-zero exit code (0 when all succeed). After a failure the others get SIGTERM, and SIGKILL
        if they are still running ``grace`` seconds later."""
        failed_at = None
        code = 0
        while [p.poll() for p in self.processes].count(None):  # poll every process (any() would stop early)
            bad = [p.returncode for p in self.processes if p.returncode not in (None, 0)]
            if bad and failed_at is None:
                code, failed_at = bad[0], time.monotonic()
                print(f"[launch] a process exited with {code}: stopping the others", file=sys.stderr, flush=True)
                self.signal_all(signal.SIGTERM)
            if failed_at is not None and time.monotonic() - failed_at > grace:
                self.signal_all(signal.SIGKILL)
            time.sleep(0.2)
        for thread in self.relays:
            thread.join(timeout=5)
        return code or next((p.returncode for p in self.processes if p.returncode), 0)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("processes", type=int, help="how many processes to start")
    p.add_argument("--cpu-devices", type=int, help="give each process this many fake CPU devices (JAX_PLATFORMS="
                                                     "cpu); default: the machine's own devices")
    p.add_argument("--port", type=int, help="the coordinator's port on 127.0.0.1 (default: a free one)")
    p.add_argument("--grace", type=float, default=60.0,
                   help="seconds the other processes get to checkpoint after one fails (default 60)")
    p.add_argument("--dry-run", action="store_true", help="print each process's command line and exit")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command every process runs")
    args = p.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.processes < 1:
        p.error(f"processes is {args.processes}; expected at least 1")
    if args.cpu_devices is not None and args.cpu_devices < 1:
        p.error(f"--cpu-devices is {args.cpu_devices}; expected at least 1")
    if not args.command:
        p.error("no command given; expected e.g. `2 stableaudio-jax train --config ... --workdir ...`")
    if args.command[0].startswith("-"):
        p.error(f"the command starts with the option {args.command[0]!r}; the launcher's options go before the "
                "process count, e.g. `--cpu-devices 4 2 stableaudio-jax train ...`")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    port = args.port or (12355 if args.dry_run else free_port())  # a fixed port keeps dry runs reproducible
    if args.dry_run:
        for i in range(args.processes):
            print(describe(i, args.processes, port, args.cpu_devices, args.command))
        return 0
    group = Group([(args.command, process_env(dict(os.environ), i, args.processes, port, args.cpu_devices))
                   for i in range(args.processes)])
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda s, _frame: group.signal_all(s))
    return group.wait(args.grace)


if __name__ == "__main__":
    sys.exit(main())
