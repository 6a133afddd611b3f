"""MetricsWriter: TensorBoard event files and metrics.jsonl from process 0, without importing torch or boto3 (which
tensorboardX imports whenever they are installed, as they are in the test extra)."""
import json
import subprocess
import sys

import pytest

WRITE = """
import sys
import numpy as np
from stableaudio_jax.training.metrics import MetricsWriter
writer = MetricsWriter(sys.argv[1], enabled=True)
writer.write(1, {"train/loss": 0.5})
writer.write(2, {"train/loss": float("nan")})
writer.write_audio(2, "demo", np.zeros((1600, 2), np.float32), 16000)
writer.close()
print(sorted(name for name in ("torch", "boto3") if name in sys.modules))
"""


@pytest.mark.parametrize("torch_first", [False, True])
def test_events_and_json_lines_are_written_without_torch_or_boto3(tmp_path, torch_first):
    import torch  # noqa: F401  (the test extra installs it: the case this guards against)
    script = ("import torch\n" if torch_first else "") + WRITE
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    # a process that imported torch itself keeps it; the writer alone imports neither
    assert done.stdout.strip() == ("['torch']" if torch_first else "[]")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["train/loss"]) for r in rows] == [(1, 0.5), (2, "nan")]
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 100  # the scalars and the audio summary
