"""The notebooks run top to bottom (nbclient, a real kernel) at CI size, and the quickstart they drive is the
README's main job: its outputs are there, and a second run resumes by skipping every finished stage."""
import json
import os
import re
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

import stableaudio_jax
from stableaudio_jax.cli import main

pytestmark = pytest.mark.slow


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_notebook(name, workdir, **parameters):
    """Executes ``notebooks/<name>`` with ``parameters`` injected after its "parameters" cell (papermill's
    convention); returns the executed notebook (also written to ``workdir``)."""
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]}))
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    nbformat.write(nb, os.path.join(workdir, name))
    return nb


def _outputs(nb, kind):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == kind]


def _printed(nb):
    return "".join(o.get("text", "") for o in _outputs(nb, "stream"))


def _assert_cpu_install_skipped(nb):
    """The install cell found a CPU runtime and the package already importable: it printed the command a fresh CPU
    runtime runs (the `notebooks` extra, from the repository) and installed nothing."""
    found = re.findall(r'^cpu runtime: stableaudio_jax is already importable, not installing; a fresh runtime runs: '
                       r'%pip install -q "([^"]+)"$', _printed(nb), re.M)
    assert found == [stableaudio_jax.install_requirement(["notebooks"])], _printed(nb)[:2000]


def test_quickstart_notebook_shows_the_main_job_and_resumes_it(tiny_world, tmp_path, capsys):
    """The tiny world is the main job, run fresh: ``quickstart --preset ci`` (tests/conftest.py). The notebook, on a
    copy of that workdir, is the rerun after a disconnect: it finds every stage done, recomputes nothing, and shows
    the run's audio, spectrograms, curves and evaluation."""
    import shutil
    fresh = json.loads((tiny_world / "quickstart.json").read_text())["runs"]["dit"]["stage_seconds"]
    assert list(fresh) == ["demo-data", "text encoder", "ingest", "train-vae", "encode", "train", "generate",
                           "evaluate"]
    workdir = shutil.copytree(tiny_world, tmp_path / "quick", ignore=shutil.ignore_patterns("rf"))
    nb = run_notebook("quickstart.ipynb", tmp_path, WORKDIR=str(workdir), PRESET="ci")
    _assert_cpu_install_skipped(nb)
    printed = _printed(nb)
    assert f"workdir {workdir} (resuming), preset ci" in printed
    assert printed.count(": already done (") == len(fresh), printed[-3000:]  # every stage skipped
    rerun = json.loads((workdir / "quickstart.json").read_text())["runs"]["dit"]
    assert list(rerun["stage_seconds"]) == list(fresh) and rerun["total_seconds"] < 30
    samples = json.loads((workdir / "samples" / "dit" / "index.json").read_text())["samples"]
    assert len(samples) == 2 and all((workdir / "samples" / "dit" / s["generated"].replace(".wav", ".png")).is_file()
                                     for s in samples)
    evaluation = json.loads((workdir / "evaluation" / "dit" / "evaluation.json").read_text())
    assert set(evaluation["sections"]) == {"autoencoder reconstruction", "prompt adherence", "timing control"}
    assert set(evaluation["sections"]["prompt adherence"]) == {"trained model", "untrained model",
                                                               "real held-out audio", "real audio through the VAE"}
    judges = evaluation["judges"]  # both validated in the run, at 95 % or more
    assert set(judges) == {"mlp", "linear"} and all(j["held_out_accuracy"] >= 0.95 for j in judges.values())
    html = [o for o in _outputs(nb, "display_data") if "text/html" in o.get("data", {})]
    images = [o for o in _outputs(nb, "display_data") if "image/png" in o.get("data", {})]
    assert len(html) >= 4 and len(images) >= 2  # the audio players, spectrograms and training curves
    capsys.readouterr()
    assert main(["quickstart", "--workdir", str(workdir), "--preset", "cpu"]) == 2
    assert "was started with --preset ci" in capsys.readouterr().err
    # the learning record of that run (benchmarks/learning_record.py): the chosen checkpoints evaluated, PNGs, JSON
    record = tmp_path / "record.json"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "learning_record.py"), "--workdir", str(workdir), "--out",
           str(tmp_path / "plots"), "--results", str(record), "--clips", "2", "--steps", "4", "--timing-prompts", "6",
           "--checkpoints", "20"]  # and the last (40); every kept one by default: test_benchmarks.py
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(record.read_text())
    assert [row["step"] for row in report["denoisers"]["dit"]] == [20, 40]
    assert set(report["final"]["dit"]["prompt adherence"]) == set(evaluation["sections"]["prompt adherence"])
    assert all(os.path.getsize(p) > 10_000 for p in report["plots"]) and len(report["plots"]) == 3
    examples = report["examples"]["dit"]  # one per instrument of the test split, generated and real, as wavs
    assert examples and len({e["instrument"] for e in examples}) == len(examples)
    assert all(os.path.getsize(os.path.join(ROOT, e[kind])) > 1000 for e in examples for kind in ("generated", "real"))


def test_convert_and_generate_notebook(tmp_path):
    from helpers import build_tiny_sao_diffusers
    folder = tmp_path / "sao_tiny"
    build_tiny_sao_diffusers(folder, 32, 32, ["a dog barking"])
    nb = run_notebook("convert_and_generate.ipynb", tmp_path, CHECKPOINT=str(folder), OUT=str(tmp_path / "model"),
                      PROMPT="a dog barking", STEPS=4, SECONDS=0.01)
    assert (tmp_path / "model" / "stableaudio_jax.json").is_file()
    _assert_cpu_install_skipped(nb)
    assert "SOURCE = 'local': not using the Hub" in _printed(nb)  # CHECKPOINT set: the Hub cell stays idle
    audio = [o for o in _outputs(nb, "display_data") if "text/html" in o.get("data", {})]
    assert len(audio) == 3  # text-to-audio, audio-to-audio, inpainting


def test_sharding_notebook(tmp_path):
    nb = run_notebook("sharding.ipynb", tmp_path, CONFIG="dit.py:tiny", MESHES=["8x1x1", "1x8x1", "2x2x2"],
                      OVERRIDES=["model.embed_dim=128", "model.depth=2", "training.crop_frames=32"],
                      REMATS=["none"], PER_DEVICE_BATCH=1, REPEATS=1)
    printed = _printed(nb)
    _assert_cpu_install_skipped(nb)
    assert "8 cpu device(s)" in printed and "3 strategies" in printed and "highest throughput: " in printed
    assert "measured on this runtime's 8 cpu device(s): every strategy is run and timed" in printed
    assert printed.split("highest throughput: ")[1].splitlines()[0].endswith(" examples/s, measured)")
    tables = [o["data"]["text/markdown"] for o in _outputs(nb, "display_data") if "text/markdown" in o["data"]]
    assert len(tables) == 1 and "| 2x2x2 b1 remat=none | 4 |" in tables[0]
    assert len([o for o in _outputs(nb, "display_data") if "image/png" in o["data"]]) == 2
    assert (tmp_path / "sharding.png").is_file()


def test_sharding_notebook_on_a_single_device_plans_a_slice_ahead_of_time(tmp_path):
    """Colab's TPU runtime is one v5e chip and its GPU runtimes one card: one device has nothing to shard, so the
    notebook compiles the strategies for TARGET (a TPU v5e-8 slice here, through libtpu from the aot extra) and
    says that nothing was run. A CPU runtime simulating one device takes the same branch."""
    nb = run_notebook("sharding.ipynb", tmp_path, CONFIG="dit.py:tiny", MESHES=["8x1x1", "1x8x1"],
                      OVERRIDES=["model.embed_dim=128", "model.depth=2", "training.crop_frames=32"],
                      REMATS=["none"], PER_DEVICE_BATCH=1, SIMULATED_CPU_DEVICES=1, TARGET="tpu:v5e-8")
    printed = _printed(nb)
    assert "1 cpu device(s)" in printed
    assert ("this runtime has a single cpu device (cpu), which has nothing to shard: planned ahead of time for "
            "tpu:v5e-8 (8 x TPU v5 lite, 16 GiB each)") in printed
    assert "nothing is run or timed" in printed and "2 strategies" in printed
    fastest = printed.split("highest throughput: ")[1].splitlines()[0]
    assert fastest.endswith(" examples/s, at most: the roofline lower bound, not measured)"), fastest
    tables = [o["data"]["text/markdown"] for o in _outputs(nb, "display_data") if "text/markdown" in o["data"]]
    assert len(tables) == 1 and "| 1x8x1 b1 remat=none | 8 |" in tables[0]
    assert (tmp_path / "sharding.png").is_file()


@pytest.mark.parametrize("name", ["quickstart.ipynb", "convert_and_generate.ipynb", "sharding.ipynb"])
def test_notebooks_are_stored_without_outputs(name):
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
