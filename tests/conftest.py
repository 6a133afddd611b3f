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
