"""launch/: the exact commands of the TPU VM and SLURM launchers (dry runs), the local multi-process launcher running
the trainer as two JAX processes, and what happens when one process of a run dies."""
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _launcher(name):
    spec = importlib.util.spec_from_file_location(f"launch_{name}", ROOT / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dry(name, *argv):
    out = subprocess.run([sys.executable, str(ROOT / "launch" / f"{name}.py"), *argv], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    return out.returncode, out.stdout, out.stderr


TRAIN = ["stableaudio-jax", "train", "--config", "configs/dit.py:sao", "--data", "gs://b/latents", "--workdir",
         "gs://b/runs/sao"]


def test_local_dry_run_gives_each_process_its_rank():
    code, out, _ = _dry("local", "--cpu-devices", "4", "--dry-run", "2", "stableaudio-jax", "train", "--workdir",
                        "runs/a b")
    assert code == 0
    assert out.splitlines() == [
        f"STABLEAUDIO_COORDINATOR=127.0.0.1:12355 STABLEAUDIO_NUM_PROCESSES=2 STABLEAUDIO_PROCESS_ID={i} "
        "JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=4 "
        "stableaudio-jax train --workdir 'runs/a b'" for i in range(2)]


def test_tpu_recover_dry_run_on_two_spot_slices():
    """create, wait for ACTIVE, per slice: the worker script, the --log-dir check, the venv setup, the detached
    start (--env as `env K=V` in front of the command), then one poll: the slice's state and each worker's status."""
    code, out, _ = _dry("tpu_vm", "--name", "sa", "--zone", "us-east5-a", "--project", "p", "--accelerator",
                        "v5p-128", "--slices", "2", "--spot", "--package", "stableaudio-jax==0.1.0", "--env",
                        "TF_CPP_MIN_LOG_LEVEL=2", "--log-dir", "gs://my-bucket/logs/", "--dry-run", "recover", *TRAIN)
    where = "--zone=us-east5-a --project=p"

    def worker(i, action):
        return (f"gcloud compute tpus tpu-vm ssh sa-{i} {where} --worker=all "
                f"'--command=bash ~/stableaudio-jax-worker.sh {action}'")
    describe = f"gcloud compute tpus queued-resources describe sa {where} '--format=value(state.state)'"
    assert code == 0
    assert out.splitlines() == [
        f"gcloud compute tpus queued-resources create sa {where} --accelerator-type=v5p-128 "
        "--runtime-version=v2-alpha-tpuv5 --node-count=2 --node-prefix=sa --spot", describe,
        *[f"gcloud compute tpus tpu-vm scp launch/tpu_worker.sh sa-{i}:stableaudio-jax-worker.sh {where} "
          "--worker=all" for i in range(2)],
        *[worker(i, f"check-log-dir --node sa-{i} --log-dir gs://my-bucket/logs") for i in range(2)],
        *[worker(i, f"setup --node sa-{i} --python 3.12 --package stableaudio-jax==0.1.0") for i in range(2)],
        *[worker(i, f"start --node sa-{i} --log-dir gs://my-bucket/logs --copy-every 60 -- env TF_CPP_MIN_LOG_LEVEL=2 "
                    + " ".join(TRAIN)) for i in range(2)],
        "# started detached; follow it: python launch/tpu_vm.py --name sa --zone us-east5-a --project p logs "
        "--follow --worker 0", describe, *[worker(i, f"status --node sa-{i}") for i in range(2)]]


def test_tpu_single_slice_actions():
    base = ["--name", "sa", "--zone", "z", "--dry-run"]
    assert _dry("tpu_vm", *base, "--accelerator", "v6e-64", "create")[1].splitlines()[0] == (
        "gcloud compute tpus queued-resources create sa --zone=z --accelerator-type=v6e-64 "
        "--runtime-version=v2-alpha-tpuv6e --node-id=sa")
    for action in ("stop", "status"):
        assert _dry("tpu_vm", *base, action)[1].strip() == (
            f"gcloud compute tpus tpu-vm ssh sa --zone=z --worker=all "
            f"'--command=bash ~/stableaudio-jax-worker.sh {action} --node sa'")
    assert _dry("tpu_vm", *base, "logs", "--lines", "7", "--worker", "3")[1].strip() == (
        "gcloud compute tpus tpu-vm ssh sa --zone=z --worker=3 "
        "'--command=bash ~/stableaudio-jax-worker.sh logs --node sa --lines 7'")
    assert _dry("tpu_vm", *base, "delete")[1].strip() == (
        "gcloud compute tpus queued-resources delete sa --zone=z --force --quiet")


@pytest.mark.parametrize("argv, message", [
    (["--accelerator", "v9-8", "create"], "--accelerator 'v9-8': unknown TPU generation 'v9'"),
    (["create"], "--accelerator is required"),
    (["run"], "run: expected the command to run after it"),
    (["stop", "now"], "stop: takes no command"),
    (["--slices", "0", "logs"], "--slices is 0; expected at least 1"),
    (["--env", "NOEQUALS", "logs"], "--env 'NOEQUALS'; expected KEY=VALUE"),
    (["--python", "3.10", "setup"], "--python: '3.10'; expected a Python version 3.11 or newer"),
    (["--log-dir", "/tmp/logs", "setup"], "--log-dir: '/tmp/logs'; expected a Cloud Storage folder, gs://BUCKET/PATH"),
    (["--copy-every", "0", "logs"], "--copy-every is 0; expected at least 1"),
    (["logs", "--worker", "first"], "--worker 'first'; expected a worker index (0, 1, ...) or all"),
])
def test_tpu_bad_input_names_the_value(argv, message):
    code, _, err = _dry("tpu_vm", "--name", "sa", "--zone", "z", "--dry-run", *argv)
    assert code != 0 and message in err


def test_slurm_scripts_per_gpu_and_per_node():
    code, out, _ = _dry("slurm", "--nodes", "4", "--partition", "gpu", "--time", "48:00:00", "--dry-run", *TRAIN)
    assert code == 0
    assert out.splitlines() == [
        "# stableaudio-jax.sbatch", "#!/bin/bash", "#SBATCH --job-name=stableaudio-jax", "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8", "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=48:00:00", "#SBATCH --output=logs/%x-%j.out", "#SBATCH --signal=TERM@300",
        "#SBATCH --requeue", "#SBATCH --partition=gpu", "set -euo pipefail",
        'echo "job ${SLURM_JOB_ID}: ${SLURM_NTASKS} processes on ${SLURM_JOB_NODELIST}, restart '
        '${SLURM_RESTART_COUNT:-0}"',
        "srun --kill-on-bad-exit=1 " + " ".join(TRAIN), "", "sbatch stableaudio-jax.sbatch"]
    code, out, _ = _dry("slurm", "--nodes", "2", "--gpus-per-node", "4", "--per", "node", "--container", "img:1",
                        "--mount", "/data:/data", "--dry-run", *TRAIN)
    lines = out.splitlines()
    assert code == 0 and "#SBATCH --ntasks-per-node=1" in lines and "#SBATCH --gpus-per-node=4" in lines
    assert "export STABLEAUDIO_LOCAL_DEVICE_IDS=0,1,2,3" in lines
    assert "srun --kill-on-bad-exit=1 --container-image=img:1 --container-mounts=/data:/data " + " ".join(
        TRAIN) in lines
    code, _, err = _dry("slurm", "--nodes", "1", "--dry-run", "--gpus-per-node", "0", *TRAIN)
    assert code != 0 and "--gpus-per-node is 0; expected at least 1" in err


def test_one_process_per_slurm_node_drives_all_its_gpus(monkeypatch):
    """JAX's SLURM detection alone would give a per-node process only GPU SLURM_LOCALID; the launcher's variable
    reaches jax.distributed.initialize, as do the timeouts."""
    import jax

    from stableaudio_jax.parallel import distributed
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(distributed.logger, "info", lambda *a: None)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("STABLEAUDIO_LOCAL_DEVICE_IDS", "0,1,2,3")
    assert distributed.initialize(dict(heartbeat_timeout=20))
    assert calls == [dict(initialization_timeout=300, heartbeat_timeout_seconds=20, local_device_ids=[0, 1, 2, 3])]
    monkeypatch.setenv("STABLEAUDIO_LOCAL_DEVICE_IDS", "all")
    with pytest.raises(ValueError, match="STABLEAUDIO_LOCAL_DEVICE_IDS is 'all'; expected device indices"):
        distributed.initialize(None)


def test_local_launcher_stops_the_others_when_one_fails():
    """Process 1 exits with 3 at once; process 0 would sleep for 10 minutes but gets SIGTERM: the launcher returns
    3 within seconds and relays each process's output with its index."""
    child = ("import os, sys, time; print('rank', os.environ['STABLEAUDIO_PROCESS_ID'], flush=True); "
             "sys.exit(3) if os.environ['STABLEAUDIO_PROCESS_ID'] == '1' else time.sleep(600)")
    start = time.monotonic()
    out = subprocess.run([sys.executable, str(ROOT / "launch" / "local.py"), "--grace", "10", "2", sys.executable,
                          "-c", child], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3 and time.monotonic() - start < 60
    assert "[process 0] rank 0" in out.stdout and "[process 1] rank 1" in out.stdout
    assert "a process exited with 3: stopping the others" in out.stderr


def _train_command(workdir, steps, *extra):
    # a log (and a stop-signal poll) every 2 steps: the tests wait for a logged step, and a stop lands on the next poll
    return ["stableaudio-jax", "train", "--config", "configs/dit.py:tiny", "--data", "synthetic", "--workdir",
            str(workdir), "--max-steps", str(steps), "--no-progress", "--config.training.log_every=2", *extra]


def _local(*argv):
    return [sys.executable, str(ROOT / "launch" / "local.py"), "--cpu-devices", "4", "2", *argv]


def _logged_steps(workdir):
    import json
    path = workdir / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def test_two_processes_train_stop_on_sigterm_and_resume_on_fewer_devices(tmp_path):
    """The launcher runs the trainer as 2 JAX processes x 4 CPU devices; SIGTERM (a preemption notice) makes both
    processes agree on a step, checkpoint it and exit 0; the run resumes from that step as 1 process x 4 devices,
    then on 1 device. (A 2-process run to its last step: tests/test_multihost_demos.py.)"""
    run = tmp_path / "run"
    launcher = subprocess.Popen(_local(*_train_command(run, 100000)), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    deadline = time.monotonic() + 600
    while not [s for s in _logged_steps(run) if s > 2]:  # a few logged steps
        assert time.monotonic() < deadline and launcher.poll() is None, "the run never logged a step"
        time.sleep(0.5)
    launcher.send_signal(signal.SIGTERM)
    output, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, output[-3000:]
    for i in range(2):
        assert f"[process {i}] " in output and f"process {i} of 2 on " in output
    assert output.count("4 local / 8 global devices (cpu)") == 2
    stopped = {int(line.split("stopped at step ")[1].split(";")[0]) for line in output.splitlines()
               if "stopped at step" in line}
    assert len(stopped) == 1 and output.count("stopped at step") == 2  # both processes, the same step
    step = stopped.pop()

    suite_flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
                   if not f.startswith("--xla_force_host_platform_device_count")]  # tests/conftest.py's level 0
    for devices in (4, 1):  # 2 processes x 4 devices -> 1 x 4 -> 1 x 1: the checkpoint restores onto each
        flags = " ".join([*suite_flags, f"--xla_force_host_platform_device_count={devices}"])
        single = subprocess.run(_train_command(run, 1), capture_output=True, text=True, timeout=600, cwd=ROOT,
                                env={**os.environ, "XLA_FLAGS": flags})
        assert single.returncode == 0, single.stderr[-3000:]
        assert f"resumed from step {step}" in single.stderr and _logged_steps(run)[-1] == step + 1
        step += 1


def test_a_dead_peer_ends_the_survivor_within_the_heartbeat_timeout(tmp_path):
    """Process 1 is killed (SIGKILL: no checkpoint, no goodbye): process 0 fails within the configured heartbeat
    timeout with JAX's message that another task died, instead of waiting in a collective for ever."""
    local = _launcher("local")
    port, workdir = local.free_port(), tmp_path / "fault"
    procs = [subprocess.Popen(_train_command(workdir, 100000, "--config.distributed.heartbeat_timeout=10"),
                              env=local.process_env(dict(os.environ), i, 2, port, 4), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        deadline = time.monotonic() + 600
        while not _logged_steps(workdir):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "training never started"
            time.sleep(0.5)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        output, _ = procs[0].communicate(timeout=120)
        assert procs[0].returncode != 0 and time.monotonic() - killed < 60
        assert "another task died" in output
    finally:
        for p in procs:
            p.kill()


def test_an_unreachable_coordinator_is_named_within_the_timeout(monkeypatch):
    import jax

    from stableaudio_jax.parallel import distributed
    port = _launcher("local").free_port()  # nothing listens there
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: pytest.fail("must not be reached"))
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"process 1 of 2: the coordinator at 127.0.0.1:{port} did not answer "
                                           "within 2 s"):
        distributed.initialize(dict(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=1,
                                    initialization_timeout=2))
    assert time.monotonic() - start < 10
