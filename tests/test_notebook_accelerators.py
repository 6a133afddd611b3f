"""The notebooks' TPU and GPU branches, on a machine that has neither.

The install cell detects the runtime from the environment (TPU_ACCELERATOR_TYPE / COLAB_TPU_ADDR, COLAB_GPU,
nvidia-smi) and from the runtime's own JAX, and picks the extra; the check cell stops when JAX is not on the
runtime's accelerator. Here the environment is faked while JAX stays on the CPU: the install cell must print the
pip command with the right extra (it never installs: STABLEAUDIO_NOTEBOOK_DRY_INSTALL=1, or the package is already
importable), and the notebook must stop at the check with a message naming the expected platform and the fix.
"""
import os
import re
import subprocess
import sys
import types

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import stableaudio_jax
from stableaudio_jax.parallel import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ["quickstart.ipynb", "convert_and_generate.ipynb", "sharding.ipynb"]
PRINTED = re.compile(r'^(\w+) runtime: (.*?)%pip install -q "([^"]+)"$', re.M)
# what tells a runtime apart; cleared first so that the machine running the tests does not leak its own
HINTS = ("TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR", "COLAB_GPU", "JAX_PLATFORMS", "STABLEAUDIO_NOTEBOOK_DRY_INSTALL")


def _notebook(name):
    return nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)


def _tagged(nb, tag):
    return next(i for i, c in enumerate(nb.cells) if tag in c.metadata.get("tags", []))


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in HINTS}
    return env | extra


def _fake_nvidia_smi(folder, gpus):
    """An nvidia-smi that lists ``gpus`` cards, as `nvidia-smi -L` does."""
    folder.mkdir(exist_ok=True)
    script = folder / "nvidia-smi"
    lines = "".join(f"echo 'GPU {i}: NVIDIA L4 (UUID: GPU-{i:08d})'\n" for i in range(gpus))
    script.write_text(f"#!/bin/sh\n{lines}")
    script.chmod(0o755)
    return str(folder)


# ------------------------------------------------------------------------------------ the install cell alone

CASES = [  # (environment, GPUs nvidia-smi lists or None: no nvidia-smi, runtime, extras; sharding's extras)
    ({"TPU_ACCELERATOR_TYPE": "v5litepod-1", "COLAB_GPU": ""}, None, "tpu", ["tpu", "notebooks"],
     ["tpu", "notebooks", "aot"]),
    ({"COLAB_TPU_ADDR": "10.0.0.2:8470", "COLAB_GPU": "0"}, None, "tpu", ["tpu", "notebooks"],
     ["tpu", "notebooks", "aot"]),
    ({"COLAB_GPU": "1"}, None, "gpu", ["gpu", "notebooks"], ["gpu", "notebooks", "aot"]),
    ({}, 1, "gpu", ["gpu", "notebooks"], ["gpu", "notebooks", "aot"]),
    ({}, 2, "gpu", ["gpu", "notebooks"], ["gpu", "notebooks"]),  # two devices: measured, no AOT
    ({"COLAB_GPU": "0"}, 0, "cpu", ["notebooks"], ["notebooks"]),  # Colab's CPU runtime sets COLAB_GPU=0
    ({}, None, "cpu", ["notebooks"], ["notebooks"]),
]


def _run_install_cell(name, tmp_path, env, parameters=""):
    """The parameters and install cells in a bare interpreter (-I -S: no site-packages, so neither the package nor
    JAX can be imported, as on a fresh runtime without JAX); returns (runtime, reason, requirement) as printed."""
    nb = _notebook(name)
    cells = [nb.cells[_tagged(nb, "parameters")].source, parameters, nb.cells[_tagged(nb, "install")].source]
    source = "\n".join(cells)
    result = subprocess.run([sys.executable, "-I", "-S", "-c", source], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = PRINTED.findall(result.stdout)
    assert len(printed) == 1, result.stdout
    return printed[0]


@pytest.mark.parametrize("name", NOTEBOOKS)
@pytest.mark.parametrize("hints, gpus, expected, extras, sharding_extras", CASES)
def test_the_install_cell_picks_the_extra_for_the_runtime(name, hints, gpus, expected, extras, sharding_extras,
                                                          tmp_path):
    path = _fake_nvidia_smi(tmp_path / "bin", gpus) if gpus is not None else str(tmp_path / "empty")
    env = _clean_env(PATH=path, STABLEAUDIO_NOTEBOOK_DRY_INSTALL="1", **hints)
    found, reason, requirement = _run_install_cell(name, tmp_path, env)
    assert found == expected
    assert "STABLEAUDIO_NOTEBOOK_DRY_INSTALL=1, not installing" in reason
    assert requirement == stableaudio_jax.install_requirement(sharding_extras if name == "sharding.ipynb" else extras)


def test_a_single_simulated_cpu_device_plans_ahead_of_time_and_needs_aot(tmp_path):
    env = _clean_env(PATH=str(tmp_path), STABLEAUDIO_NOTEBOOK_DRY_INSTALL="1")
    _, _, requirement = _run_install_cell("sharding.ipynb", tmp_path, env, "SIMULATED_CPU_DEVICES = 1")
    assert requirement == stableaudio_jax.install_requirement(["notebooks", "aot"])
    _, _, requirement = _run_install_cell("sharding.ipynb", tmp_path, env, "SIMULATED_CPU_DEVICES = 1\nTARGET = None")
    assert requirement == stableaudio_jax.install_requirement(["notebooks"])


# ------------------------------------------------------------------------------------ up to the check, in a kernel


TPU_HINTS, GPU_HINTS = {"TPU_ACCELERATOR_TYPE": "v5litepod-1", "COLAB_GPU": "0"}, {"COLAB_GPU": "1"}


# every notebook in a kernel on one accelerator runtime, both for the sharding notebook (its install line adds
# `aot`); each platform's message for every case is checked in-process (test_the_check_names_the_fix_for_each_platform)
# and every notebook's install choice per runtime by test_the_install_cell_picks_the_extra_for_the_runtime
@pytest.mark.parametrize("name, platform, hints", [("quickstart.ipynb", "tpu", TPU_HINTS),
                                                   ("convert_and_generate.ipynb", "gpu", GPU_HINTS),
                                                   ("sharding.ipynb", "tpu", TPU_HINTS),
                                                   ("sharding.ipynb", "gpu", GPU_HINTS)])
def test_an_accelerator_runtime_whose_jax_is_on_the_cpu_stops_at_the_check(name, platform, hints, tmp_path):
    """A real kernel runs the notebook's first cells up to its runtime check. The package is importable here, so
    the install cell only prints its command; JAX_PLATFORMS=cpu keeps JAX (and libtpu) off hardware this machine
    does not have, as a runtime whose accelerator JAX failed to load would be."""
    nb = _notebook(name)
    check = _tagged(nb, "check-runtime")
    nb.cells = nb.cells[:check + 1]
    env = _clean_env(JAX_PLATFORMS="cpu", **hints)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(CellExecutionError) as stopped:
        client.execute(env=env)
    assert stopped.value.ename == "RuntimeMismatch"
    message = stopped.value.evalue
    assert f"this is a {platform.upper()} runtime, but JAX runs on cpu" in message
    assert "JAX_PLATFORMS='cpu' keeps JAX off the " + platform in message
    # it stopped at the check: every cell before ran, the check raised
    outputs = [c.get("outputs", []) for c in nb.cells if c.cell_type == "code"]
    assert any(o.get("output_type") == "error" for o in outputs[-1])
    printed = "".join(o.get("text", "") for cell in outputs[:-1] for o in cell if o.get("output_type") == "stream")
    found = PRINTED.findall(printed)
    assert len(found) == 1 and found[0][0] == platform, printed
    assert "stableaudio_jax is already importable, not installing" in found[0][1]
    extras = [platform, "notebooks"] + (["aot"] if name == "sharding.ipynb" else [])  # one device: AOT
    assert found[0][2] == stableaudio_jax.install_requirement(extras)


# ------------------------------------------------------------------------------------ the check's messages


def _fake_devices(monkeypatch, platform, kind, count=1):
    import jax
    device = types.SimpleNamespace(platform=platform, device_kind=kind)
    monkeypatch.setattr(jax, "devices", lambda *a: [device] * count)


def test_the_check_names_the_fix_for_each_platform(monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    _fake_devices(monkeypatch, "cpu", "cpu")
    with pytest.raises(runtime.RuntimeMismatch, match=r"this is a TPU runtime, but JAX runs on cpu .*TPU backend did "
                                                      r"not load\. Fix: %pip install -U \"jax\[tpu\]\".*restart"):
        runtime.check_accelerator("tpu")
    with pytest.raises(runtime.RuntimeMismatch, match=r"this is a GPU runtime, but JAX runs on cpu .*CUDA backend "
                                                      r"did not load\. Fix: %pip install -U \"jax\[cuda12\]\""):
        runtime.check_accelerator("gpu")
    assert runtime.check_accelerator("cpu") == "1 cpu device(s): cpu"
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    with pytest.raises(runtime.RuntimeMismatch, match="JAX_PLATFORMS='cpu' keeps JAX off the gpu"):
        runtime.check_accelerator("gpu")
    with pytest.raises(ValueError, match="runtime 'cuda': expected 'tpu', 'gpu' or 'cpu'"):
        runtime.check_accelerator("cuda")


def test_the_check_passes_on_the_expected_accelerator(monkeypatch):
    _fake_devices(monkeypatch, "tpu", "TPU v5 lite")
    assert runtime.check_accelerator("tpu") == "1 tpu device(s): TPU v5 lite"
    _fake_devices(monkeypatch, "gpu", "NVIDIA L4", 2)
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")  # names the GPU backend its own way: not a cause to blame
    assert runtime.check_accelerator("gpu") == "2 gpu device(s): NVIDIA L4"
    _fake_devices(monkeypatch, "gpu", "NVIDIA L4")
    with pytest.raises(runtime.RuntimeMismatch, match="this is a TPU runtime, but JAX runs on gpu"):
        runtime.check_accelerator("tpu")


def test_a_backend_that_fails_to_start_is_a_mismatch_with_the_fix(monkeypatch):
    import jax

    def fail(*args):
        raise RuntimeError("Unable to initialize backend 'tpu': TPU initialization failed")
    monkeypatch.setattr(jax, "devices", fail)
    with pytest.raises(runtime.RuntimeMismatch, match=r"TPU runtime but JAX could not start a backend \(Unable to "
                                                      r"initialize backend 'tpu'.*\)\. Fix: %pip install -U"):
        runtime.check_accelerator("tpu")
    with pytest.raises(RuntimeError, match="Unable to initialize"):
        runtime.check_accelerator("cpu")


def test_modules_imported_before_the_install_replaced_them_ask_for_a_restart(monkeypatch):
    import jaxlib
    installed = jaxlib.__version__
    monkeypatch.setitem(sys.modules, "jaxlib", types.SimpleNamespace(__version__="0.0.1"))
    assert runtime.stale_modules() == [f"jaxlib 0.0.1 -> {installed}"]
    with pytest.raises(runtime.RuntimeMismatch, match=rf"already imported \(jaxlib 0\.0\.1 -> {re.escape(installed)}\)"
                                                      r"; restart the session"):
        runtime.check_accelerator("cpu")
    monkeypatch.setitem(sys.modules, "jaxlib", jaxlib)
    assert runtime.stale_modules() == []
