"""launch/tpu_vm.py, launch/tpu_worker.sh and launch/xpk.py: every dry run printed in launch/README.md, and the TPU VM
launcher driven for real against a stand-in `gcloud` whose "TPU VMs" are folders here (one worker each, its home
a folder, its commands run by bash) and whose "bucket" is a folder: setup into a verified venv (or one line and
nothing left behind), a detached run that outlives its ssh, logs, log copies to gs://, an unwritable bucket, stop,
and `recover` across a preemption. The stand-in `uv` makes venvs with `python -m venv` and a stand-in `jax` whose
devices say TPU, so the worker script's own verification runs; nothing here talks to Google Cloud."""
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "launch" / "README.md"

# The stand-in gcloud: queued resources (state files), tpu-vm scp / ssh (a node is a folder holding its worker's
# home; ssh runs the command with bash there), storage cp / rm (gs://B/P is $FAKE_CLOUD/gcs/B/P; a bucket named in
# $FAKE_CLOUD/readonly refuses writes as Cloud Storage does). Every call is appended to $FAKE_CLOUD/calls.
GCLOUD = r'''
import os, shutil, signal, subprocess, sys
from pathlib import Path
cloud = Path(os.environ["FAKE_CLOUD"])
argv = sys.argv[1:]
with open(cloud / "calls", "a") as f:
    f.write(" ".join(argv) + "\n")
flags = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith("--") and "=" in a}
words = [a for a in argv if not a.startswith("--")]

def gcs(url):
    return cloud / "gcs" / url[len("gs://"):]

def nodes(name):
    return (cloud / f"qr-{name}.nodes").read_text().split()

if words[:3] == ["compute", "tpus", "queued-resources"]:
    verb, name = words[3], words[4]
    state = cloud / f"qr-{name}"
    if verb == "create":
        count = int(flags.get("--node-count", 0))
        names = [f"{name}-{i}" for i in range(count)] if count else [flags["--node-id"]]
        (cloud / f"qr-{name}.nodes").write_text(" ".join(names))
        for node in names:
            (cloud / "vm" / node / "home").mkdir(parents=True)
        state.write_text("ACTIVE")
    elif verb == "describe":
        if not state.exists():
            sys.exit("ERROR: NOT_FOUND")
        print(state.read_text())
    elif verb == "delete":  # the VMs go, with whatever still ran on them
        for node in nodes(name):
            pid_file = cloud / "vm" / node / "home" / ".stableaudio-jax" / "pid"
            if pid_file.exists():
                try:
                    os.killpg(int(pid_file.read_text()), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(cloud / "vm" / node)
        state.unlink()
elif words[:3] == ["compute", "tpus", "tpu-vm"]:
    if words[3] == "scp":
        node, dest = words[5].split(":", 1)
        shutil.copy(words[4], cloud / "vm" / node / "home" / dest)
    else:  # ssh
        home = cloud / "vm" / words[4] / "home"
        if not home.exists():
            sys.exit(f"ssh: connect to host {words[4]}: No route to host")
        env = {**os.environ, "HOME": str(home), "TPU_WORKER_ID": "0"}
        sys.exit(subprocess.run(["bash", "-c", flags["--command"]], cwd=home, env=env).returncode)
elif words[:2] == ["storage", "cp"]:
    src, dst = words[2], words[3]
    if dst.startswith("gs://"):
        bucket = dst[len("gs://"):].split("/")[0]
        if bucket in (cloud / "readonly").read_text().split():
            sys.exit(f"ERROR: (gcloud.storage.cp) [sa@p.iam.gserviceaccount.com] does not have permission to "
                     f"access b instance [{bucket}] (or it may not exist): Permission 'storage.objects.create' "
                     "denied on resource")
    source = gcs(src) if src.startswith("gs://") else Path(src)
    if not source.exists():
        sys.exit(f"ERROR: (gcloud.storage.cp) The following URLs matched no objects or files: {src}")
    target = gcs(dst) if dst.startswith("gs://") else Path(dst)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
elif words[:2] == ["storage", "rm"]:
    gcs(words[2]).unlink()
else:
    sys.exit(f"fake gcloud: unexpected {argv}")
'''

# The stand-in uv: `venv` (python -m venv; $FAKE_UV_FAIL=venv fails as uv does without a Python) and `pip install`
# (a jax whose devices are TPUs; $FAKE_UV_FAIL=install fails as an unresolvable requirement does).
UV = r'''
import os, subprocess, sys
from pathlib import Path
argv, fail = sys.argv[1:], os.environ.get("FAKE_UV_FAIL")
if argv[0] == "venv":
    if fail == "venv":
        sys.exit("error: No interpreter found for Python 3.12 in managed installations or search path")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", argv[-1]], check=True)
elif argv[:2] == ["pip", "install"]:
    if fail == "install":
        sys.exit("error: Failed to download and build `stableaudio-jax @ git+https://example.invalid/x`")
    python = Path(argv[argv.index("--python") + 1])
    site = next(python.parent.parent.glob("lib/python*/site-packages"))
    (site / "jax").mkdir()
    (site / "jax" / "__init__.py").write_text(
        "__version__ = '0.0+fake'\n"
        "class _Device:\n    platform, device_kind = 'tpu', 'TPU v5p'\n"
        "def devices():\n    return [_Device()] * 4\n")
'''

# the "trainer": counts steps; on SIGTERM it "checkpoints" and exits 0; on the first attempt of a recover test it
# preempts its own slice (the queued resource turns SUSPENDED, the VM's processes are killed); a second attempt
# finds the checkpoint and finishes
TRAINER = r'''
import os, signal, sys, time
from pathlib import Path
ckpt, stop = Path(os.environ["CKPT"]), []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
if ckpt.exists():
    print("resumed from step", ckpt.read_text(), flush=True)
    sys.exit(0)
for step in range(int(sys.argv[1])):
    print("step", step, flush=True)
    time.sleep(0.1)
    if stop:
        ckpt.write_text(str(step))
        print("stopped at step", step, flush=True)
        sys.exit(0)
    if os.environ.get("PREEMPT_AT") == str(step):
        ckpt.write_text(str(step))
        Path(os.environ["PREEMPT_STATE"]).write_text("SUSPENDED")
        os.kill(int((Path.home() / ".stableaudio-jax" / "pid").read_text()), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
sys.exit(int(sys.argv[2]))
'''


def readme_dry_runs():
    """(argv, expected output lines) of every ``$ python launch/...`` block in launch/README.md."""
    runs = []
    for block in re.findall(r"^```\n(\$ python launch/.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL):
        lines = block.splitlines()
        end = next(i for i, line in enumerate(lines) if not line.endswith("\\"))
        command = " ".join(line.rstrip("\\").strip() for line in lines[:end + 1])[len("$ "):]
        runs.append((shlex.split(command)[1:], lines[end + 1:]))
    return runs


def _readme_id(argv) -> str:
    verbs = {"create", "setup", "run", "logs", "status", "stop", "delete", "recover", "list"}
    return "-".join([Path(argv[0]).stem, *[a for a in argv if a in verbs][:1]])


@pytest.mark.parametrize("argv, expected", [pytest.param(*run, id=_readme_id(run[0])) for run in readme_dry_runs()])
def test_readme_dry_runs_are_what_the_launchers_print(argv, expected):
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == expected


def test_readme_shows_the_venv_the_detached_run_the_bucket_logs_and_xpk():
    argvs = [" ".join(argv) for argv, _ in readme_dry_runs()]
    for needed in ("tpu_vm.py", "xpk.py", "local.py", "slurm.py", "setup", "run stableaudio-jax", "logs --follow",
                   "stop", "recover", "create stableaudio-jax", "list", "delete"):
        assert any(needed in argv for argv in argvs), needed


def test_the_default_package_is_the_repository_constant():
    import stableaudio_jax
    out = subprocess.run([sys.executable, "launch/tpu_vm.py", "--name", "n", "--zone", "z", "--dry-run", "setup"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    remote = shlex.split(out.splitlines()[-1])[-1]  # the ssh's --command=...
    assert shlex.quote(f"stableaudio-jax[tpu] @ git+{stableaudio_jax.REPOSITORY}") in remote


@pytest.mark.parametrize("argv, message", [
    (["--workload", "Bad_Name", "list"], "--workload 'Bad_Name'; expected lower-case letters, digits and '-'"),
    (["--workload", "w", "create", "x"], "create: --tpu-type is required"),
    (["--workload", "w", "--tpu-type", "v5p-8", "create"], "create: expected the command to run after it"),
    (["--workload", "w", "--log-dir", "s3://b/l", "list"], "--log-dir: 's3://b/l'; expected a Cloud Storage folder"),
    (["--workload", "w", "delete", "now"], "delete: takes no command (got 'now')"),
])
def test_xpk_bad_input_names_the_value(argv, message):
    out = subprocess.run([sys.executable, "launch/xpk.py", "--cluster", "c", "--dry-run", *argv], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode != 0 and message in out.stderr


def test_the_verification_refuses_a_python_without_tpus():
    """The worker script's own check, run by this (CPU-only) Python: one line saying what it found."""
    verify = re.search(r"^VERIFY='(.*?)'$", (ROOT / "launch" / "tpu_worker.sh").read_text(), re.M | re.S).group(1)
    out = subprocess.run([sys.executable, "-c", verify], capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1] == "jax.devices() reports cpu, not TPU"


@pytest.fixture
def cloud(tmp_path):
    """A stand-in Google Cloud: `gcloud` and `uv` on PATH, the state under tmp_path; calls tpu_vm.py."""
    bin_dir, state = tmp_path / "bin", tmp_path / "cloud"
    bin_dir.mkdir()
    (state / "gcs" / "my-bucket").mkdir(parents=True)
    (state / "readonly").write_text("locked-bucket")
    for name, source in (("gcloud", GCLOUD), ("uv", UV)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{source}")
        (bin_dir / name).chmod(0o755)
    (tmp_path / "trainer.py").write_text(TRAINER)
    env = {**os.environ, "FAKE_CLOUD": str(state), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def launch(*argv, name="sa", extra_env=None, timeout=120):
        return subprocess.run([sys.executable, "launch/tpu_vm.py", "--name", name, "--zone", "z", *argv], cwd=ROOT,
                              env={**env, **(extra_env or {})}, capture_output=True, text=True, timeout=timeout)
    launch.state, launch.trainer, launch.env = state, tmp_path / "trainer.py", env
    yield launch
    for pid_file in state.glob("vm/*/home/.stableaudio-jax/pid"):  # nothing outlives the test
        try:
            os.killpg(int(pid_file.read_text()), 9)
        except (ProcessLookupError, ValueError):
            pass


def _create(cloud, *argv):
    out = cloud("--accelerator", "v5p-8", *argv, "create")
    assert out.returncode == 0, out.stderr


def _wait(predicate, what, seconds=30):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_setup_builds_a_verified_venv_and_a_failed_one_leaves_nothing(cloud):
    _create(cloud)
    home = cloud.state / "vm" / "sa" / "home"
    out = cloud("--package", "stableaudio-jax @ git+https://example.invalid/x", "setup")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ready: " in out.stdout and "4 TPU v5p devices" in out.stdout
    first = (home / "stableaudio-venv").resolve()
    assert (home / "stableaudio-venv").is_symlink() and (first / "bin" / "python").exists()
    for fail, step in (("venv", "create a Python 3.12 environment"), ("install", "install jax[tpu] and ")):
        out = cloud("setup", extra_env={"FAKE_UV_FAIL": fail})
        lines = [line for line in out.stderr.splitlines() if line.startswith("stableaudio-jax setup:")]
        assert out.returncode != 0 and len(lines) == 1, out.stderr
        assert "sa worker 0 (" in lines[0] and f"setup step '{step}" in lines[0] and "failed: error: " in lines[0]
        assert "[launch] setup failed on sa (exit 1)" in out.stderr
        # the working environment is untouched and the failed one is gone
        assert (home / "stableaudio-venv").resolve() == first
        assert sorted((home / ".stableaudio-jax" / "venvs").iterdir()) == [first]


def test_a_detached_run_logs_to_the_bucket_and_stops_on_sigterm(cloud):
    _create(cloud, "--slices", "2")
    assert cloud("--slices", "2", "--package", "p", "setup").returncode == 0
    log_dir = ["--log-dir", "gs://my-bucket/logs", "--copy-every", "1"]
    start = time.monotonic()
    out = cloud("--slices", "2", *log_dir, "run", sys.executable, str(cloud.trainer), "100000", "0",
                extra_env={"CKPT": str(cloud.state / "ckpt")})
    assert out.returncode == 0, out.stderr
    # returned at once (the run goes on without the ssh sessions): 100000 steps of 0.1 s would take hours; the
    # bound leaves room for a loaded machine (36 s seen beside a training run)
    assert time.monotonic() - start < 120
    assert out.stdout.count("started (pid ") == 2 and "# started detached; follow it: python launch/tpu_vm.py" \
        in out.stdout
    copies = [cloud.state / "gcs" / "my-bucket" / "logs" / f"sa-{i}" / "worker-0.log" for i in range(2)]
    _wait(lambda: all(c.exists() and "step 3" in c.read_text() for c in copies), "the logs were not copied")
    status = cloud("--slices", "2", "status").stdout
    assert status.count(": running (pid ") == 2, status
    logs = cloud("--slices", "2", "logs", "--lines", "2", "--worker", "0").stdout
    assert re.search(r"^\[sa-1 w0\] step \d+$", logs, re.M), logs

    out = cloud("--slices", "2", "stop")
    assert out.returncode == 0 and out.stdout.count("SIGTERM sent to the run") == 2
    _wait(lambda: cloud("--slices", "2", "status").stdout.count(": stopped 0") == 2, "the run did not stop")
    for copy in copies:  # the final copy holds the end of the run
        text = copy.read_text()
        assert "stopped at step" in text and text.rstrip().endswith("exited with 0")


def test_an_unwritable_log_dir_is_one_line_before_anything_starts(cloud):
    _create(cloud)
    out = cloud("--log-dir", "gs://locked-bucket/logs", "run", "true")
    lines = [line for line in out.stderr.splitlines() if line.startswith("stableaudio-jax check-log-dir:")]
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert "cannot write --log-dir gs://locked-bucket/logs (" in lines[0]
    assert "Permission 'storage.objects.create'" in lines[0]
    assert "roles/storage.objectAdmin on gs://locked-bucket (" in lines[0]
    assert lines[0].endswith(", or choose another --log-dir")
    assert "start" not in (cloud.state / "calls").read_text().split("check-log-dir")[-1]


def test_recover_recreates_a_preempted_slice_and_the_run_resumes(cloud):
    """The first attempt preempts its slice at step 25 (state SUSPENDED, the VM's processes killed): recover sees the
    state, deletes and re-creates the slice, sets it up and starts the same command, which resumes and exits 0."""
    env = {"CKPT": str(cloud.state / "ckpt"), "PREEMPT_AT": "25", "PREEMPT_STATE": str(cloud.state / "qr-sa")}
    out = cloud("--accelerator", "v5p-8", "--spot", "--package", "p", "--poll", "0", "--log-dir",
                "gs://my-bucket/logs", "--copy-every", "1", "recover", "env", *[f"{k}={v}" for k, v in env.items()],
                sys.executable, str(cloud.trainer), "100000", "0")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[launch] slice preempted (restart 1 of 100): re-creating it" in out.stdout
    calls = (cloud.state / "calls").read_text()
    assert calls.count("queued-resources create") == 2 and calls.count("queued-resources delete") == 1
    assert calls.count(" setup --node sa ") == 2 and calls.count(" start --node sa ") == 2
    log = (cloud.state / "gcs" / "my-bucket" / "logs" / "sa" / "worker-0.log").read_text()
    # the re-created VM continued the bucket's copy of the first VM's log (copied each second until it died)
    lines = log.splitlines()
    assert "step 5" in lines and lines.index("step 5") < lines.index("resumed from step 25")
    assert lines[-1].endswith("exited with 0")


def test_recover_does_not_retry_a_failure_on_a_healthy_slice(cloud):
    out = cloud("--accelerator", "v5p-8", "--package", "p", "--poll", "0", "recover", "env",
                f"CKPT={cloud.state / 'ckpt'}", sys.executable, str(cloud.trainer), "2", "3")
    assert out.returncode == 3
    assert "[launch] the run failed (exit 3) on a healthy slice: not restarting it" in out.stderr
    assert (cloud.state / "calls").read_text().count("queued-resources create") == 1


def _container_command(*argv):
    out = subprocess.run([sys.executable, "launch/xpk.py", "--cluster", "c", "--workload", "w", "--tpu-type",
                          "v5p-16", "--dry-run", *argv], capture_output=True, text=True, cwd=ROOT, check=True)
    command = next(a for a in shlex.split(out.stdout) if a.startswith("--command="))[len("--command="):]
    return command.replace("/app/tpu_worker.sh", str(ROOT / "launch" / "tpu_worker.sh"))


def test_the_xpk_container_command_sets_up_checks_and_runs(cloud, tmp_path):
    """The line every container runs, here with bash: setup (stand-in uv), the bucket check, then the command in the
    foreground, its output on stdout (the container's log) and in <log-dir>/<workload>/slice-<j>/worker-<i>.log."""
    command = _container_command("--package", "p", "--log-dir", "gs://my-bucket/logs", "create", sys.executable,
                                 str(cloud.trainer), "3", "0")
    env = {**cloud.env, "HOME": str(tmp_path), "TPU_WORKER_ID": "1", "MEGASCALE_SLICE_ID": "1",
           "CKPT": str(tmp_path / "ckpt")}
    out = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "w/slice-1 worker 1" in out.stdout and "ready: " in out.stdout and "step 2" in out.stdout
    copy = cloud.state / "gcs" / "my-bucket" / "logs" / "w" / "slice-1" / "worker-1.log"
    assert "step 2" in copy.read_text() and copy.read_text().rstrip().endswith("exited with 0")


def test_a_stopped_container_exits_with_xpks_restart_code(cloud, tmp_path):
    """SIGTERM (a preemption): the trainer checkpoints and exits 0, the container exits 42, which xpk's JobSet
    restarts (a 0 would mark the slice's Job complete)."""
    (tmp_path / "stableaudio-venv" / "bin").mkdir(parents=True)
    command = _container_command("create", sys.executable, str(cloud.trainer), "100000", "0").split(" && ")[-1]
    env = {**cloud.env, "HOME": str(tmp_path), "TPU_WORKER_ID": "0", "CKPT": str(tmp_path / "ckpt")}
    proc = subprocess.Popen(["bash", "-c", command], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    log = tmp_path / "stableaudio-jax.log"
    _wait(lambda: log.exists() and "step 2" in log.read_text(), "the command did not start")
    proc.send_signal(15)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 42 and "stopped at step" in output, output


def test_the_run_outlives_the_session_that_started_it(cloud, tmp_path):
    """What ssh does when the connection closes: SIGHUP to the session's process group. The run started from that
    session is in a session of its own and goes on; `stop` then ends it."""
    (tmp_path / "stableaudio-venv" / "bin").mkdir(parents=True)
    (tmp_path / "stableaudio-venv" / "bin" / "python").symlink_to(sys.executable)
    env = {**cloud.env, "HOME": str(tmp_path), "TPU_WORKER_ID": "0", "CKPT": str(tmp_path / "ckpt")}
    worker = ["bash", str(ROOT / "launch" / "tpu_worker.sh")]
    start = shlex.join([*worker, "start", "--", sys.executable, str(cloud.trainer), "100000", "0"])
    # an ssh session's shell takes SIGHUP's default action, whatever this process inherited: in a full run something
    # earlier leaves SIGHUP ignored in pytest, and an ignore is inherited (bash cannot undo it), so a small exec
    # wrapper resets it first
    shell = ("import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
             "os.execvp('bash', ['bash', '-c', sys.argv[1]])")
    session = subprocess.Popen([sys.executable, "-c", shell, f"{start} && sleep 600"], env=env,
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "stableaudio-jax.log"
    _wait(lambda: log.exists() and "step 2" in log.read_text(), "the run did not start")
    os.killpg(session.pid, signal.SIGHUP)
    try:
        assert session.wait(timeout=60) != 0
    except subprocess.TimeoutExpired:  # say what was still there, and leave no detached run behind
        left = subprocess.run(["ps", "-o", "pid,pgid,stat,args", "-g", str(session.pid)], capture_output=True,
                              text=True).stdout
        os.killpg(session.pid, signal.SIGKILL)
        subprocess.run([*worker, "stop"], env=env, capture_output=True)
        pytest.fail(f"the session outlived its SIGHUP by 60 s; its processes:\n{left}")
    steps = log.read_text().count("\nstep ")
    # the run goes on: it logs more steps (waited for, not slept for: a loaded machine may take more than a second)
    _wait(lambda: log.read_text().count("\nstep ") > steps, "the run ended with the session that started it")
    status = subprocess.run([*worker, "status"], env=env, capture_output=True, text=True).stdout
    assert ": running (pid " in status
    assert "SIGTERM sent" in subprocess.run([*worker, "stop"], env=env, capture_output=True, text=True).stdout
    _wait(lambda: ": stopped 0" in subprocess.run([*worker, "status"], env=env, capture_output=True,
                                                 text=True).stdout, "the run did not stop")
