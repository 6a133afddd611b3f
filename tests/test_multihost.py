"""Two processes x 4 CPU devices on 127.0.0.1 run the same VAE training steps as one process x 8 devices (each
process feeding its own rows of the global batch through jax.make_array_from_process_local_data) and reach the
same parameters."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.multihost


WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")
STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(process_id, count, port, out):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.Popen([sys.executable, WORKER, str(process_id), str(count), str(port), str(out), str(STEPS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait(process):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]


def test_two_processes_match_one(tmp_path):
    single = _launch(0, 1, 0, tmp_path / "single.npz")
    _wait(single)
    port = _free_port()
    pair = [_launch(i, 2, port, tmp_path / "pair.npz") for i in range(2)]
    for p in pair:
        _wait(p)
    a, b = np.load(tmp_path / "single.npz"), np.load(tmp_path / "pair.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) > 50
    for name in a.files:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert float(a["moved"]) > 1e-3  # the steps did change the autoencoder's parameters
