"""The `convert` and `generate` commands run as a user would, on a tiny random Stable Audio Open style model
written in both published layouts (stable-audio-tools and diffusers)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from helpers import (SMALL_VAE_LOSSES, build_tiny_sao_diffusers, sat_model_config, write_music_folder,
                     write_sat_checkpoint)

COND = 128  # token width 128 = 2 key/value heads of 64, expressible in stable-audio-tools' config too
CLI = os.path.join(os.path.dirname(sys.executable), "stableaudio-jax")


def _run(*args, cwd=None):
    result = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    return result


def _in_process(capsys, *args) -> tuple[int, str]:
    """``stableaudio-jax ARGS`` in this process (the same ``cli.main`` the console script calls, without a new
    interpreter's start-up and compiles): its exit code and stderr. Subprocess runs above keep the script covered."""
    from stableaudio_jax import cli
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    parts = build_tiny_sao_diffusers(root / "diffusers", COND, 32, ["a dog barking", "rain on a tin roof"])
    # the same modules in stable-audio-tools' layout, plus a T5 directory with its tokenizer
    write_sat_checkpoint(parts, root / "model.safetensors")
    (root / "model_config.json").write_text(json.dumps(sat_model_config(COND)))
    shutil.copytree(root / "diffusers" / "text_encoder", root / "t5")
    shutil.copy(root / "diffusers" / "tokenizer" / "spiece.model", root / "t5" / "spiece.model")
    a = _run("convert", "--from", "diffusers", "--checkpoint", str(root / "diffusers"), "--out", str(root / "ck_d"))
    b = _run("convert", "--from", "stable-audio-tools", "--checkpoint", str(root / "model.safetensors"),
             "--model-config", str(root / "model_config.json"), "--t5", str(root / "t5"), "--out",
             str(root / "ck_s"))
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    assert "wrote" in a.stdout and os.path.isfile(root / "ck_s" / "stableaudio_jax.json")
    return root


def test_generate_writes_wavs_and_spectrograms(converted):
    out = converted / "out" / "clip.wav"
    result = _run("generate", "a dog barking", "rain on a tin roof", "--checkpoint", str(converted / "ck_d"),
                  "--seconds", "0.008", "--steps", "3", "--batch", "2", "--out", str(out), "--spectrogram",
                  "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "sampling" in result.stderr  # the tqdm bar
    for i in range(4):
        audio, rate = sf.read(converted / "out" / f"clip_{i}.wav")
        assert rate == 44100 and audio.shape == (round(0.008 * 44100), 2) and np.abs(audio).max() > 0
        assert os.path.getsize(converted / "out" / f"clip_{i}.png") > 100


def test_both_layouts_convert_to_the_same_model(converted, capsys):
    outs = []
    for name in ("ck_d", "ck_s"):
        path = converted / f"{name}.wav"
        code, err = _in_process(capsys, "generate", "rain on a tin roof", "--checkpoint", converted / name,
                                "--steps", "3", "--out", path, "--no-progress", "--seed", "4")
        assert code == 0, err
        outs.append(sf.read(path)[0])
    assert np.abs(outs[0] - outs[1]).max() <= 2 / 32768  # the same audio, to 16-bit quantisation


def test_inpainting_and_audio_to_audio_from_files(converted, capsys):
    source = converted / "source.wav"
    sf.write(source, 0.2 * np.random.default_rng(0).standard_normal((512, 1)), 22050)  # mono, another rate
    for extra in (["--inpaint-audio", str(source), "--inpaint-keep", "0:0.005"],
                  ["--init-audio", str(source), "--init-noise-level", "3"]):
        code, err = _in_process(capsys, "generate", "a dog barking", "--checkpoint", converted / "ck_d", "--steps",
                                "2", "--out", converted / "edit.wav", "--no-progress", *extra)
        assert code == 0, err
        assert sf.read(converted / "edit.wav")[0].shape == (512, 2)


@pytest.mark.parametrize("args,message", [
    (["generate", "x", "--seconds", "5"], "seconds_total=5.0 exceeds the model's window"),
    (["generate", "x", "--sampler", "heun"], "sampler 'heun' is not available"),
    (["generate", "x", "--inpaint-audio", "nope.wav"], "cannot read audio file 'nope.wav'"),
    (["convert", "--from", "stable-audio-tools", "--checkpoint", "x", "--out", "y"], "needs --model-config"),
])
def test_bad_arguments_exit_2_with_a_message(converted, args, message, capsys, monkeypatch):
    if args[0] == "generate":
        args = args + ["--checkpoint", str(converted / "ck_d"), "--steps", "2", "--no-progress"]
    monkeypatch.chdir(converted)
    code, err = _in_process(capsys, *args)
    assert code == 2 and message in err, err


def test_a_url_with_an_unknown_scheme_is_named_not_taken_for_a_local_path(capsys):
    """'nosuch://b/run' must not become ./nosuch:/b/run on every pod worker's disk."""
    from stableaudio_jax import cli
    assert cli.main(["train", "--data", "synthetic", "--workdir", "nosuch://bucket/run"]) == 2
    err = capsys.readouterr().err
    assert "nosuch://bucket/run: no filesystem for nosuch:// URLs" in err, err


def test_generate_without_a_model_names_the_options(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("STABLEAUDIO_JAX_CHECKPOINT", raising=False)
    code, err = _in_process(capsys, "generate", "x")
    assert code == 2 and "--checkpoint DIR or set $STABLEAUDIO_JAX_CHECKPOINT" in err
    code, err = _in_process(capsys, "generate", "x", "--checkpoint", tmp_path)
    assert code == 2 and "not a stableaudio-jax stored model" in err


def _wait_for_step(workdir, step, process, timeout=300):
    import json
    import time
    deadline = time.time() + timeout
    path = os.path.join(workdir, "metrics.jsonl")
    while time.time() < deadline:
        assert process.poll() is None, process.stderr.read()[-3000:]
        if os.path.exists(path):
            steps = [json.loads(line)["step"] for line in open(path) if line.strip()]
            if steps and max(steps) >= step:
                return
        time.sleep(0.5)
    raise TimeoutError(f"no step {step} in {path}")


def test_train_vae_command_resumes_after_ctrl_c(tmp_path):
    import json
    import signal
    data = write_music_folder(tmp_path / "music")
    workdir = str(tmp_path / "run")
    args = [CLI, "train-vae", "--config", "configs/vae.py:tiny", "--data", str(data), "--workdir", workdir,
            "--config.mesh.data=2", "--config.mesh.fsdp=4", "--config.training.log_every=2",
            "--config.training.checkpoint_every=100", *[f"--config.{o}" for o in SMALL_VAE_LOSSES]]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    process = subprocess.Popen(args + ["--config.training.steps=1000"], cwd=root, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_step(workdir, 2, process)
    process.send_signal(signal.SIGINT)  # Ctrl-C: save and stop
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert "re-run the same command to resume" in err and "train-vae" in err  # the log line and the tqdm bar
    stopped = max(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert 2 <= stopped < 1000
    resumed = subprocess.run(args + ["--config.training.steps=1000", "--max-steps", "2", "--no-progress"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {stopped}" in resumed.stderr
    steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl")) if line.strip()]
    assert max(steps) == stopped + 2 and os.listdir(os.path.join(workdir, "tensorboard"))


def test_profile_traces_steps_after_the_compile(tmp_path, capsys):
    from stableaudio_jax import cli
    workdir = tmp_path / "run"
    argv = ["train", "--config", "configs/dit.py:tiny", "--data", "synthetic", "--workdir", str(workdir),
            "--max-steps", "3", "--no-progress"]
    assert cli.main([*argv, "--profile", "2"]) == 0
    traces = list((workdir / "profile").rglob("*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    assert f"profile of steps 2-3 written to {workdir / 'profile'}" in capsys.readouterr().err
    assert cli.main([*argv, "--profile", "0"]) == 2


@pytest.mark.parametrize("command", ["ingest", "encode", "demo-data"])
def test_every_output_path_is_out_and_output_still_works_with_a_note(command, capsys):
    """One spelling for output paths (--out, as convert / generate / export / evaluate / bench); the old --output of
    ingest, encode and demo-data is accepted and says so."""
    from stableaudio_jax.cli import build_parser
    required = {"ingest": ["--audio", "a"], "encode": ["--audio", "a", "--vae", "v", "--text-encoder", "t"],
                "demo-data": []}[command]
    parser = build_parser()
    assert parser.parse_args([command, *required, "--out", "o"]).out == "o"
    assert capsys.readouterr().err == ""
    assert parser.parse_args([command, *required, "--output", "o"]).out == "o"
    assert f"stableaudio-jax {command}: --output is deprecated and will be removed; use --out" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    shown = capsys.readouterr().out
    assert "--out OUT, --output OUT" in shown and "%%" not in shown


def test_help_texts_show_percent_signs_once(capsys):
    from stableaudio_jax.cli import build_parser
    for command in ("evaluate", "demo-data"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        shown = capsys.readouterr().out
        assert "%%" not in shown and "%" in shown, command


def test_command_logs_follow_stderr_after_it_is_swapped_and_closed(monkeypatch):
    """setup_logging's handler writes to the stderr of the moment: a closed earlier stream (pytest's capture, a
    notebook's redirect) gets nothing and raises nothing."""
    import io
    import logging
    from stableaudio_jax.commands import setup_logging
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging()
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("stableaudio_jax.test").info("after the swap")
    assert second.getvalue().rstrip().endswith("INFO stableaudio_jax.test: after the swap"), second.getvalue()
