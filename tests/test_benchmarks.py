"""The benchmark scripts run end to end on tiny configs and write well-formed JSON: every ratio keeps its
interleaved pairs and a summary consistent with them, plus the environment record (no timing assertions)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import assert_interleaved_pairs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_vae_benchmark_writes_json(tmp_path):
    out = tmp_path / "vae.json"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "vae_bench.py"), "--config", "configs/vae.py:tiny",
           "--seconds", "0.01", "--long-seconds", "0.5", "--chunk-size", "16", "--repeats", "2", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    speed, memory = report["speed"], report["decode_memory"]
    assert speed["parameters"] > 0
    assert_interleaved_pairs(speed["encode"], 2)
    assert_interleaved_pairs(speed["decode"], 2)
    assert_environment(report)
    assert speed["max_abs_diff_decode"] < 1e-4 and speed["max_abs_diff_encode_mean"] < 1e-4  # same weights
    assert memory["latent_frames"] == round(0.5 * 44100 / 8)
    assert memory["whole_temp_bytes"] > memory["chunked_temp_bytes"] > 0


def test_t5_benchmark_writes_json(tmp_path):
    out = tmp_path / "t5.json"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "t5_bench.py"), "--config", "configs/t5.py:tiny",
           "--batch", "4", "--max-length", "16", "--pairs", "2", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    encode = report["encode"]
    assert_interleaved_pairs(encode, 2)
    assert np.isclose(encode["jax_prompts_per_s"], 4 / encode["summary"]["ours_s"]["median"])
    assert_environment(report)
    assert encode["max_abs_diff"] < 1e-4  # the same weights, so the same embeddings


def test_dit_benchmark_writes_json(tmp_path):
    """Both rows (scanned layers, the default users run, and unrolled) against one torch model, forward and
    forward + backward, each with its pairs."""
    out = tmp_path / "dit.json"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "dit_bench.py"), "--config", "configs/dit.py:sao",
           "--config.model.depth=1", "--config.model.embed_dim=768", "--config.model.num_heads=12", "--frames", "16",
           "--tokens", "10", "--dtype", "float32", "--pairs", "2",
           "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    dit = report["dit"]
    assert dit["depth"] == 1 and dit["flops_per_forward"] > 0 and dit["pairs"] == 2
    assert [row["scan_layers"] for row in dit["rows"]] == [True, False]
    for row in dit["rows"]:
        assert row["max_abs_diff"] < 1e-3  # the same weights, so the same output
        for part in ("forward", "forward_backward"):
            assert_interleaved_pairs(row[part], 2)
            assert row[part]["jax_mfu"] is None  # no known peak for a CPU
        assert np.isclose(row["forward_backward"]["flops"], 3 * dit["flops_per_forward"])
    assert_environment(report)


def test_dit_profile_sums_the_trace_by_kind(tmp_path):
    """The profile reads XLA's trace back: shares sum to one, matmuls dominate, and only the scanned layers pay
    for slicing each layer's weights out of the stacked params."""
    out = tmp_path / "profile.json"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "dit_profile.py"), "--config", "configs/dit.py:tiny",
           "--frames", "16", "--tokens", "8", "--calls", "2", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr
    scanned, unrolled = json.loads(out.read_text())["rows"]
    assert scanned["scan_layers"] and not unrolled["scan_layers"]
    for row in (scanned, unrolled):
        shares = {k: v["share"] for k, v in row["by_kind"].items()}
        assert np.isclose(sum(shares.values()), 1.0) and row["op_seconds_per_call"] > 0
        assert shares["projection matmuls"] > 0 and shares["attention matmuls"] > 0
    assert scanned["by_kind"]["layer weight slices"]["seconds"] > 0
    assert unrolled["by_kind"]["layer weight slices"]["seconds"] == 0


def assert_environment(report):
    """What the docs state beside each table: threads, BLAS / oneDNN, JAX flags, versions, the code measured."""
    assert report["torch"]["num_threads"] == report["host"]["schedulable_cpus"]
    assert report["torch"]["num_interop_threads"] >= 1 and report["torch"]["libraries"]
    assert "XLA_FLAGS" in report["jax"] and report["jax"]["cpu_dot_library"]
    assert report["versions"]["jax"] and report["versions"]["torch"]
    assert report["code"]["stableaudio_jax"] == os.path.join(ROOT, "stableaudio_jax")  # this checkout, not another


def test_generate_benchmark_writes_json(tmp_path):
    out = tmp_path / "generate.json"
    small = ["--config.model.depth=1", "--config.model.embed_dim=256", "--config.model.num_heads=4",
             "--config.conditioning.cond_dim=128", "--config.model.io_channels=8",
             "--config.vae.channels=16", "--config.vae.latent_dim=8"]
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "generate_bench.py"), *small, "--frames", "16",
           "--steps", "2", "--t5-layers", "1", "--dtype", "float32", "--repeats", "2", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr
    generation = json.loads(out.read_text())["generate"]
    assert_interleaved_pairs(generation, 2)
    for row in generation["pairs"]:  # each pair keeps our stage times, which fit inside its total
        stages = row["ours_stages"]
        assert set(stages) == {"conditioning_s", "sampling_s", "decode_s"}
        assert all(v > 0 for v in stages.values()) and sum(stages.values()) <= row["ours_s"]
    assert generation["ours_3m_sde_median_s"] > 0


def test_few_step_quality_measures_tell_real_from_wrong(tmp_path):
    """The few-step benchmark's measures: real latents score near 0 and are always nearest their own prompt;
    latents of the wrong prompt are far and misclassified; its dataset writes a manifest train can read."""
    import importlib.util

    from stableaudio_jax.data.latent_records import read_manifest
    spec = importlib.util.spec_from_file_location("few_step_bench", os.path.join(ROOT, "benchmarks", "few_step_bench.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    refs = bench.references(bench.SPLITS["test"]["reference_seed"])
    rng = np.random.default_rng(5)
    prompts = np.arange(16) % bench.PROMPTS
    real = np.stack([bench.pattern(p, rng.uniform(0, 6.3), rng) for p in prompts])
    good = bench.quality(real, prompts, refs)
    wrong = bench.quality(real, (prompts + 1) % bench.PROMPTS, refs)
    assert good["spectral_distance"] < 0.1 and good["prompt_accuracy"] == 1.0
    assert wrong["spectral_distance"] > 0.5 and wrong["prompt_accuracy"] == 0.0
    # the validation split's real spectra are another draw of the same patterns: close, never the same numbers
    validation = bench.references(bench.SPLITS["validation"]["reference_seed"])
    assert not np.array_equal(validation, refs) and np.abs(validation - refs).max() < 0.1 * np.abs(refs).max()
    assert bench.SPLITS["validation"]["noise_seed"] != bench.SPLITS["test"]["noise_seed"]
    assert bench.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    data, texts = bench.write_dataset(str(tmp_path / "latents"), per_prompt=2)
    manifest = read_manifest(data)
    assert manifest["records"] == 8 and texts.shape == (bench.PROMPTS, bench.TEXT_LENGTH, bench.TEXT_DIM)


def test_sharding_report_fits_the_fine_tune_table_against_the_reserve_and_jax_default(tmp_path):
    """The fine-tune memory table (benchmarks/sharding_report.py) checks each compiled total against three
    capacities: an L4 under JAX's default 75 % preallocation (16.87 GiB), an L4 less the 1.5 GiB runtime reserve
    (20.99 GiB) and an H100 80 GB less the reserve; a plan whose JSON is missing names the script that makes it."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import sharding_report
    finally:
        sys.path.pop(0)
    gib = 2 ** 30
    totals = {"sao_finetune_ema_device_l4x1": 20.5, "sao_finetune_ema_host_l4x1": 16.5,
              "sao_finetune_ema_off_l4x1": 21.5, "sao_lora16_l4x1": 80.0, "sao_lora64_l4x1": 4.0}
    for name, total in totals.items():
        row = {"strategy": {"global_batch": 8, "remat": "full", "opt_dtype": None},
               "memory": {"arguments": 1 * gib, "temporaries": 2 * gib, "total": int(total * gib), "host": 0}}
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(row) + "\n")
    lines = sharding_report.finetune_table(str(tmp_path)).splitlines()
    assert "JAX default (16.87)" in lines[0] and "all but the reserve (20.99)" in lines[0] and "(77.64)" in lines[0]
    fits = {line.split(" | ")[6]: line.split(" | ")[-3:] for line in lines[2:]}
    assert fits["**20.50**"] == ["**no**", "yes", "yes |"]
    assert fits["**16.50**"] == ["yes", "yes", "yes |"]
    assert fits["**21.50**"] == ["**no**", "**no**", "yes |"]
    assert fits["**80.00**"] == ["**no**", "**no**", "**no** |"]
    (tmp_path / "sao_lora64_l4x1.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="run benchmarks/sharding_plans.sh sao_lora64_l4x1"):
        sharding_report.finetune_table(str(tmp_path))


def _benchmark_module(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_judge_vs_guidance_scores_accuracy_margin_and_paired_differences():
    """The guidance benchmark's measures on judges with known log-probabilities: accuracy is argmax == caption,
    the margin is the caption's log-probability minus the best other one, ``both`` needs both judges right, and
    the paired difference is per clip."""
    bench = _benchmark_module("judge_vs_guidance")

    class Judge:
        labels = ["flute", "organ", "piano"]

        def __init__(self, table):
            self.table = np.log(np.asarray(table, np.float64))

        def features(self, audio, rate):
            return int(audio)  # the clip's row in the table

        def log_probabilities(self, rows):
            return self.table[rows]

    sure = Judge([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4]])   # third clip wrong (flute over piano)
    doubt = Judge([[0.4, 0.5, 0.1], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])  # first clip wrong
    out = bench.judged({"a": sure, "b": doubt}, [0, 1, 2], ["flute", "organ", "piano"], 16000)
    assert out["a"]["accuracy"]["per_clip"] == [1.0, 1.0, 0.0] and out["b"]["accuracy"]["mean"] == 2 / 3
    assert out["both"]["accuracy"]["mean"] == 1 / 3  # only the second clip is right by both
    assert np.allclose(out["a"]["margin"]["per_clip"], np.log([0.7 / 0.2, 0.8 / 0.1, 0.4 / 0.5]))
    assert np.allclose(out["b"]["confidence"]["per_clip"], np.log([0.4, 0.8, 0.7]))
    low, high = out["a"]["margin"]["ci95"]
    assert low <= out["a"]["margin"]["mean"] <= high
    paired = bench.paired_difference([1.0, 2.0, 4.0], [0.5, 2.5, 1.0])
    assert paired["mean"] == pytest.approx(1.0) and paired["ci95"][0] <= 1.0 <= paired["ci95"][1]


def test_preset_steps_estimate_counts_each_step_kind_it_takes():
    """The preset benchmark's estimate: warm-up steps at the warm-up median, the rest as generator/discriminator
    pairs, the denoiser's steps, plus the first call of each step kind the run takes (no adversarial first calls
    for a run that never leaves its warm-up)."""
    import ml_collections
    bench = _benchmark_module("preset_steps")

    def timing(first, median):
        return {"first_call_s": first, "step_s": {"median": median}}
    vae = {"warmup": timing(10, 1.0), "generator": timing(20, 2.0), "discriminator": timing(30, 3.0)}
    dit = {"step": timing(5, 0.5)}
    preset = ml_collections.ConfigDict({"vae": {"steps": 100, "overrides": ["training.warmup_steps=60"]},
                                        "dit": {"steps": 40}})
    estimate = bench.estimate(preset, vae, dit)
    assert estimate["train_vae_s"] == 60 * 1.0 + 20 * (2.0 + 3.0) + 10 + 20 + 30
    assert estimate["train_dit_s"] == 40 * 0.5 + 5 and estimate["total_s"] == estimate["train_vae_s"] + 25
    preset.vae.overrides = ["training.warmup_steps=100"]
    assert bench.estimate(preset, vae, dit)["train_vae_s"] == 100 * 1.0 + 10


def test_learning_record_reuses_the_quickstart_evaluation_only_when_it_asked_the_same(tmp_path):
    """The record reads the quickstart's evaluation of the final model instead of rerunning it only when that run
    asked for the same clips, sampling steps, timing prompts, baselines, judges' file (any spelling of its path)
    and seed; anything else is evaluated again."""
    record = _benchmark_module("learning_record")
    classifier = tmp_path / "evaluation" / "classifier.npz"
    asked = {"clips": 200, "steps": 50, "timing_prompts": 48, "baselines": True, "classifier": str(classifier)}
    assert record.quickstart_evaluation(str(tmp_path), "dit", asked, 0) is None  # nothing stored
    stored = {"seed": 0, "sections": {}, "settings": {**asked, "classifier": os.path.relpath(classifier)}}
    (tmp_path / "evaluation" / "dit").mkdir(parents=True)
    (tmp_path / "evaluation" / "dit" / "evaluation.json").write_text(json.dumps(stored))
    assert record.quickstart_evaluation(str(tmp_path), "dit", asked, 0) == stored
    assert record.quickstart_evaluation(str(tmp_path), "dit", asked, 1) is None  # another seed
    assert record.quickstart_evaluation(str(tmp_path), "dit", {**asked, "clips": 96}, 0) is None
    assert record.quickstart_evaluation(str(tmp_path), "unet", asked, 0) is None


def test_learning_record_evaluates_every_kept_checkpoint_unless_told_and_always_the_last(tmp_path):
    record = _benchmark_module("learning_record")
    for step in (10, 20, 30, 40):
        (tmp_path / "dit" / "checkpoints" / str(step)).mkdir(parents=True)
    (tmp_path / "dit" / "checkpoints" / "tmp_50").mkdir()  # an unfinished save is not a checkpoint
    kept = record.checkpoint_steps(str(tmp_path / "dit"))
    assert kept == [10, 20, 30, 40] and record.checkpoint_steps(str(tmp_path / "unet")) == []
    assert record.chosen_steps(kept, None) == kept
    assert record.chosen_steps(kept, [20]) == [20, 40] and record.chosen_steps(kept, [40]) == [40]


def test_learning_record_times_a_stopped_and_resumed_run_without_its_pauses_and_keeps_its_loss_curves(tmp_path):
    """A run paused or stopped and resumed: its training time is the logged span less the gaps (each listed), and
    the log's stage times per invocation leave a stopped stage open instead of counting the time it was down."""
    record = _benchmark_module("learning_record")
    rows = [{"step": 0, "time": 0.0, "data/files": 8}]  # the data line has no step time
    rows += [{"step": 10 * i, "time": 100.0 + 10 * i + (500 if i > 3 else 0), "perf/step_time_s": 1.0 + i / 100,
              "train/spectral_loss": 3.0 - i / 10, "train/grad_norm": 1.0} for i in range(1, 7)]
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    timed = record.training_time(str(tmp_path / "vae"))
    assert timed["gaps"] == [{"after_step": 30, "seconds": 510.0}] and timed["span_seconds"] == 550.0
    assert timed["span_less_gaps_seconds"] == 50.0 and timed["median_step_seconds"] == 1.04
    assert record.training_time(str(tmp_path / "dit")) is None
    curves = record.loss_curves(str(tmp_path / "vae"))  # the loss terms' curves, not the other metrics
    assert list(curves) == ["spectral_loss"] and curves["spectral_loss"][0] == [10, 2.9] and len(curves[
        "spectral_loss"]) == 6
    log = tmp_path / "run.log"
    line = "2026-12-07 05:{:02d}:00,001 INFO stableaudio_jax.commands.quickstart: quickstart stage {}/8: {}\n"
    log.write_text(line.format(0, 1, "demo-data") + "progress bar\n" + line.format(7, 2, "text encoder")
                   + line.format(9, 3, "ingest") + line.format(50, 1, "demo-data") + line.format(51, 2, "text encoder"))
    first, second = record.log_stages(str(log))
    assert first["stage_seconds"] == {"demo-data": 420.0, "text encoder": 120.0, "ingest": None}
    assert second["started"].endswith("05:50:00") and second["stage_seconds"] == {"demo-data": 60.0,
                                                                                   "text encoder": None}


def test_compile_flags_benchmark_measures_the_suites_flags_and_keeps_every_repeat(monkeypatch):
    """benchmarks/compile_flags.py (the evidence for tests/conftest.py's XLA flags): its ``suite`` set is the one the
    suite uses, and its ratios are per repeat against level 0, every repeat kept (children faked: each real child
    compiles for half a minute)."""
    import conftest
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        bench = _benchmark_module("compile_flags")
    finally:
        sys.path.pop(0)
    assert bench.FLAG_SETS["suite"] == conftest._COMPILE_FAST
    compile_s = {"default": 20.0, "level0": 10.0, "suite": 4.0}
    calls = []

    def child(flags):
        name = next(n for n, f in bench.FLAG_SETS.items() if f == flags)
        calls.append(name)
        scale = 1.0 + 0.1 * (len(calls) > 3)  # the second repeat is 10 % slower on every side
        return {p: {"compile_cpu_s": compile_s[name] * scale, "compile_wall_s": 0.0,
                    "step_cpu_s": (0.5 if name == "default" else 1.0) * scale} for p in bench.PROGRAMS}
    monkeypatch.setattr(bench, "_run_child", child)
    report = bench.measure(repeats=2)
    assert calls == ["default", "level0", "suite"] * 2  # interleaved: every set once per repeat
    assert len(report["rows"]) == 2
    suite = report["summary"]["suite/vae"]
    assert suite["compile_speedup_vs_level0"] == {"median": 2.5, "min": 2.5, "max": 2.5}
    assert report["summary"]["default/dit_scanned"]["step_time_vs_level0"]["median"] == 0.5
    assert report["compile_cpu_s_all_programs"]["level0"]["min"] == 30.0


def test_cpu_preset_vae_lr_changes_only_the_rate_and_reads_what_the_vae_trained_with(tmp_path):
    """The comparison's runs differ from the preset in the generator's learning rate alone, and each row reports
    the rate from the VAE run's own config (not the one asked for) beside the quickstart's times and evaluation."""
    bench = _benchmark_module("cpu_preset_vae_lr")
    from stableaudio_jax.config_loader import load_config
    preset = load_config("configs/quickstart.py:cpu").vae.overrides
    changed = bench.rate_overrides(5e-4)
    assert [a for a, b in zip(preset, changed) if a != b] == [o for o in preset if o.startswith(bench.LR_KEY)]
    assert f"{bench.LR_KEY}0.0005" in changed and len(changed) == len(preset)
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"training": {"gen_optimizer": {"lr": 5e-4}}}))
    (tmp_path / "quickstart.json").write_text(json.dumps(
        {"runs": {"dit": {"stage_seconds": {"train-vae": 300.0}, "total_seconds": 750.0}}}))
    rows = {name: {"clips": 12} for name in ("trained model", "real audio through the VAE", "untrained model")}
    sections = {"autoencoder reconstruction": {"trained VAE": {"mel_distance": 2.6}}, "prompt adherence": rows,
                "timing control": {"trained model": {"tail_energy_db": -2.3}}}
    (tmp_path / "evaluation" / "dit").mkdir(parents=True)
    (tmp_path / "evaluation" / "dit" / "evaluation.json").write_text(json.dumps({"sections": sections}))
    logged = [{"step": 25, "train/grad_norm": 0.5}, {"step": 25, "perf/step_time_s": 1.0},
              {"step": 50, "train/grad_norm": 0.75}, {"step": 75, "train/grad_norm": 0.25}]
    (tmp_path / "dit").mkdir()
    (tmp_path / "dit" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logged))
    row = bench.summarize(str(tmp_path))
    assert row["dit_grad_norm"] == {"logged_steps": 3, "max": 0.75, "median": 0.5, "min": 0.25}
    assert row["vae_lr"] == 5e-4 and row["total_seconds"] == 750.0 and row["test"]["vae"]["mel_distance"] == 2.6
    assert row["test"]["timing"]["tail_energy_db"] == -2.3 and row["test"]["through_vae"] == {"clips": 12}


def test_length_crossover_times_musicgen_and_estimates_sao_from_measured_steps(tmp_path):
    """The length benchmark on tiny sizes: MusicGen runs one decoder step per 50 Hz frame (+3 for its delay pattern)
    and returns that much audio; SAO's 100-step time is built from its measured stages, flagged as an estimate;
    the crossover is read from the two curves; SA3 without its reference checkout is refused by name."""
    out, png = tmp_path / "crossover.json", tmp_path / "crossover.png"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "length_crossover_bench.py"), "--variant", "tiny",
           "--systems", "musicgen", "sao", "--seconds", "0.1", "--sao-steps", "2", "--out", str(out),
           "--plot", str(png)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    musicgen, sao = report["runs"]["musicgen"], report["runs"]["sao"]
    assert [r["decoder_steps"] for r in musicgen] == [8]
    assert [r["audio_seconds"] for r in musicgen] == pytest.approx([0.1])
    for r in sao:
        stages = r["stages_s"]
        assert r["estimated"] and r["measured_steps"] == 2
        assert r["seconds_s"] == pytest.approx(r["measured_s"] + 98 * stages["sampling_s"] / 2)
    assert set(report["against_musicgen"]) == {"sao"} and png.stat().st_size > 0
    refused = subprocess.run(cmd[:2] + ["--systems", "sa3", "--out", str(out)], capture_output=True, text=True)
    assert refused.returncode == 2 and "--systems sa3 needs --reference" in refused.stderr


def test_length_crossover_is_read_between_the_lengths_where_the_faster_system_changes():
    bench = _benchmark_module("length_crossover_bench")
    found = bench.crossovers([10, 30, 60], diffusion=[30.0, 40.0, 50.0], autoregressive=[10.0, 40.0 + 10.0, 100.0])
    assert found["diffusion_faster_at"] == [30, 60]
    assert found["crossings"] == [{"seconds": pytest.approx(10 + 20 * 20 / 30), "diffusion_faster_above": True}]
    assert bench.crossovers([10, 20], [1.0, 2.0], [5.0, 6.0]) == {"diffusion_faster_at": [10, 20], "crossings": []}
