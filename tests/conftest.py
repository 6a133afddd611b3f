"""Test harness: 8 simulated CPU devices (set before jax is imported), offline Hugging Face, shared helpers."""
import os

# 8 fake CPU devices for sharding tests. The tests run tiny models, so XLA compile time dominates: backend
# optimisation level 0 halves the suite's wall time (it changes how hard LLVM optimises, not the maths).
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    + ["--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0"])
os.environ["JAX_PLATFORMS"] = "cpu"  # tests never need an accelerator
# One persistent compilation cache for the session, inherited by the subprocesses the CLI and multi-host tests
# start: a computation compiled once (same HLO, same devices, same flags) is not compiled again.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile
    _cache = tempfile.mkdtemp(prefix="stableaudio-jax-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _eight_devices():
    assert jax.device_count() == 8, f"expected 8 CPU devices from XLA_FLAGS, got {jax.devices()}"


def pytest_configure(config):
    # The reference classes (diffusers' AutoencoderOobleck) still use torch's legacy weight_norm on purpose:
    # its weight_g / weight_v names are what the published checkpoints contain.
    config.addinivalue_line("filterwarnings", "ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")


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
