"""Test harness: 8 simulated CPU devices (set before jax is imported), offline Hugging Face, shared helpers."""
import json
import logging
import os
import pathlib

# 8 fake CPU devices for sharding tests. The tests run tiny models, so XLA compile time dominates, and the flags
# below trade run-time speed for compile time (none changes the maths): backend optimisation level 0 halves the
# suite's wall time (how hard LLVM optimises); XLA:CPU's older elemental emitters instead of its MLIR fusion
# emitters, in one LLVM module, compile a tiny DiT/VAE training step 1.7-6x faster than level 0 alone, its steps
# up to 1.2x as long (medians: benchmarks/compile_flags.py, docs/results/compile_flags.json). Worker scripts that set their own XLA_FLAGS
# append STABLEAUDIO_TESTS_XLA_FLAGS.
_COMPILE_FAST = ["--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
                 "--xla_cpu_parallel_codegen_split_count=1"]


def _compile_fast_flags() -> str:
    """The flags above if this jaxlib knows them (an unknown XLA flag aborts every process), else level 0 alone.
    Probed once per run: the pytest-xdist workers and the tests' subprocesses inherit the answer."""
    if "STABLEAUDIO_TESTS_XLA_FLAGS" not in os.environ:
        import subprocess
        import sys
        probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], capture_output=True, text=True,
                               env={**os.environ, "XLA_FLAGS": " ".join(_COMPILE_FAST), "JAX_PLATFORMS": "cpu"})
        if probe.returncode != 0:
            print(f"tests/conftest.py: XLA refused {_COMPILE_FAST[1:]} ({probe.stderr.strip()[-200:]}); "
                  "compiling with --xla_backend_optimization_level=0 only", file=sys.stderr)
        os.environ["STABLEAUDIO_TESTS_XLA_FLAGS"] = " ".join(_COMPILE_FAST if probe.returncode == 0
                                                             else _COMPILE_FAST[:1])
    return os.environ["STABLEAUDIO_TESTS_XLA_FLAGS"]


os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    + ["--xla_force_host_platform_device_count=8", _compile_fast_flags()])
os.environ["JAX_PLATFORMS"] = "cpu"  # tests never need an accelerator
# The ahead-of-time TPU tests load libtpu (the aot extra) for its topologies; by default the first process to load
# it takes a machine-wide lock file, so a test would fail while any other JAX process on the machine (a training
# run, the other xdist worker) holds libtpu. bench/targets.py sets the same for `bench sharding`.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# One persistent compilation cache for the session, inherited by the subprocesses the CLI and multi-host tests
# start: a computation compiled once (same HLO, same devices, same flags) is not compiled again. Every compile is
# kept, however short: each file ends by dropping the in-memory caches (below) and each subprocess starts without
# them, so the many small programs (eager ops, shape helpers) would otherwise be compiled again file after file.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile
    _cache = tempfile.mkdtemp(prefix="stableaudio-jax-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _eight_devices():
    assert jax.device_count() == 8, f"expected 8 CPU devices from XLA_FLAGS, got {jax.devices()}"


DURATIONS = os.path.join(os.path.dirname(__file__), "durations.json")


def pytest_addoption(parser):
    parser.addoption("--record-durations", action="store_true",
                     help=f"write each test file's total seconds in this run to {DURATIONS}")


def pytest_collection_modifyitems(config, items):
    """Longest files first, by the per-file seconds of a recorded run (``--record-durations``). pytest.ini hands
    whole files to the xdist workers in this order, so the run does not end with one worker on a long file while
    the others idle. A file not in the record goes last; a file keeps its own test order (the sort is stable)."""
    if os.path.exists(DURATIONS):
        with open(DURATIONS, encoding="utf-8") as f:
            seconds = json.load(f)
        items.sort(key=lambda item: -seconds.get(os.path.basename(str(item.path)), 0.0))


_file_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    name = os.path.basename(report.nodeid.split("::")[0])
    _file_seconds[name] = _file_seconds.get(name, 0.0) + report.duration


def pytest_sessionfinish(session):
    # the controller (or a run without workers) sees every test's report; workers leave the writing to it
    if session.config.getoption("--record-durations") and not os.environ.get("PYTEST_XDIST_WORKER"):
        with open(DURATIONS, "w", encoding="utf-8") as f:
            json.dump({k: round(v, 1) for k, v in sorted(_file_seconds.items(), key=lambda kv: -kv[1])}, f, indent=1)
            f.write("\n")


def pytest_configure(config):
    # The reference classes (diffusers' AutoencoderOobleck) still use torch's legacy weight_norm on purpose:
    # its weight_g / weight_v names are what the published checkpoints contain.
    config.addinivalue_line("filterwarnings", "ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")


_ROOT_LOGGER_AT_START = (logging.getLogger().handlers[:], logging.getLogger().level)


@pytest.fixture(autouse=True)
def _root_logger_restored():
    """A command under test calls ``setup_logging`` (root logger at INFO with a stderr handler); without this the
    next test in the same worker would see that command's INFO lines in its captured stderr. The state restored is
    the one from before the session, not from before the test: a session or module fixture (``tiny_world``) that
    runs a command sets the root logger up before this fixture's snapshot, so a per-test snapshot would keep its
    handler for every later file in the worker (CI's failure on stop 33: httpx's INFO lines in test_hub's stderr)."""
    _restore_root_logger()  # after the wider fixtures this test uses, which are set up first
    yield
    _restore_root_logger()


def _restore_root_logger():
    root = logging.getLogger()
    root.handlers[:] = _ROOT_LOGGER_AT_START[0]
    root.setLevel(_ROOT_LOGGER_AT_START[1])


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """A file's compiled programs are dropped when the file ends. Two workers that kept every file's executables
    grew past 5 GB each (with the multi-host tests' processes beside them, near this machine's 24 GB); a later
    file that compiles the same program again finds it in the persistent compilation cache."""
    yield
    import gc
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """``helpers.build_tiny_world``'s folder: a ``quickstart --preset ci`` run (demo data, its text encoder,
    ingested audio, the VAE run, latents, a trained and exported v-DiT, samples, evaluation) and the v-DiT's
    rectified-flow fine-tune, built once per run: under pytest-xdist the workers share one copy (a file lock, in
    the folder all workers' temporary folders sit in), so it is trained once, not once per worker. Tests only read
    it (the quickstart notebook's test runs on a copy). ``STABLEAUDIO_TESTS_TINY_WORLD=FOLDER`` uses a finished world
    kept from an earlier run instead (``helpers.build_tiny_world(FOLDER)``, then ``touch FOLDER/.complete``)."""
    import shutil

    from filelock import FileLock
    from helpers import build_tiny_world
    if os.environ.get("STABLEAUDIO_TESTS_TINY_WORLD"):  # a world kept from an earlier run, to iterate on one test
        world = pathlib.Path(os.environ["STABLEAUDIO_TESTS_TINY_WORLD"])
        assert (world / ".complete").exists(), f"STABLEAUDIO_TESTS_TINY_WORLD={world}: not a finished tiny world"
        return world
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    world = root / "tiny_world"
    with FileLock(str(root / "tiny_world.lock")):
        if not (world / ".complete").exists():
            shutil.rmtree(world, ignore_errors=True)  # what a worker that failed halfway left
            world.mkdir()
            build_tiny_world(world)
            (world / ".complete").touch()
    return world


@pytest.fixture(scope="session")
def gcs_bucket():
    """``gs://stableaudio-test``: a Cloud Storage emulator on 127.0.0.1 (gcp-storage-emulator, in memory) for the
    session, wired the way every client this package uses finds it: gcsfs / google-cloud-storage through
    ``STORAGE_EMULATOR_HOST``, orbax's tensorstore through ``TENSORSTORE_GCS_HTTP_URL``. Subprocesses inherit it."""
    import socket
    import subprocess
    import time

    import fsspec
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import sys
    emulator = os.path.join(os.path.dirname(__file__), "gcs_emulator.py")
    server = subprocess.Popen([sys.executable, emulator, "start", "--host", "127.0.0.1", "--port", str(port),
                               "--default-bucket", "stableaudio-test", "--in-memory"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"the GCS emulator did not start on port {port}")
            time.sleep(0.1)
    url = f"http://127.0.0.1:{port}"
    env = {"STORAGE_EMULATOR_HOST": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "FSSPEC_GCS_TOKEN": "anon",
           "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
           "GOOGLE_CLOUD_PROJECT": "test"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"  # the environment is read when fsspec is imported
    try:
        yield "gs://stableaudio-test"
    finally:
        import gc
        gc.collect()  # writers that upload on __del__ (tensorboardX) do it now, while the server still answers
        fsspec.config.conf["gcs"].pop("token", None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.terminate()
        server.wait(timeout=30)
