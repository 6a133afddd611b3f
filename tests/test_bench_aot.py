"""Ahead-of-time planning for hardware this machine does not have (the `aot` extra: libtpu and the CUDA plugin):
a tiny DiT's training step compiled for a TPU v5e-8 slice and an 8 x H100 node holds the collectives its mesh
implies, FSDP lowers per-device memory, a scanned layer stack is costed from its unrolled 1- and 2-layer twins as
exactly as a full unrolled compile, and `bench sharding --find` prints the fastest strategy that fits."""
import json
import os
import subprocess
import sys

import pytest

from stableaudio_jax.bench import compiled as analysis
from stableaudio_jax.bench import sharding, targets
from stableaudio_jax.parallel import hardware
from stableaudio_jax.bench.strategies import Strategy
from stableaudio_jax.cli import main
from stableaudio_jax.config_loader import load_config

SMALL = ["model.embed_dim=128", "model.depth=2", "model.num_heads=4", "training.crop_frames=32"]
# where what a test proves does not depend on the depth: one layer to compile instead of two (a GPU compile here
# is mostly a fixed cost, a TPU one grows with the layers)
ONE_LAYER = [*SMALL, "model.depth=1"]


@pytest.fixture(scope="module")
def v5e():
    return targets.resolve("tpu:v5e-8")


@pytest.fixture(scope="module")
def tpu_rows(v5e):
    config = load_config("configs/dit.py:tiny", SMALL)
    meshes = {"data": (8, 1, 1), "fsdp": (1, 8, 1), "tensor": (2, 1, 4)}
    return {name: sharding.run_strategy(config, Strategy(mesh, 1 if name != "tensor" else 4), target=v5e)
            for name, mesh in meshes.items()}


def test_a_tpu_slice_is_described_without_the_hardware(v5e):
    assert (v5e.device_count, v5e.devices[0].device_kind, v5e.hbm_bytes) == (8, "TPU v5 lite", 16 * 2 ** 30)
    assert not v5e.measured and v5e.devices[0].platform == "tpu"
    v5p = targets.resolve("tpu:v5p-64")  # 64 TensorCores = 32 chips, one JAX device each
    assert v5p.device_count == 32 and v5p.devices[0].device_kind == "TPU v5"


def test_unknown_targets_name_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"TPU slice 'v5e-7': v5e slices come in sizes \[1, 4, 8, 16"):
        targets.resolve("tpu:v5e-7")
    with pytest.raises(ValueError, match=r"'v9-8': expected <type>-<N> with type one of \['v4', 'v5e', 'v5p'"):
        targets.resolve("tpu:v9-8")
    with pytest.raises(ValueError, match=r"target 'tpuv5e-8': expected one of \['cpu', 'local', 'tpu:v4-N'"):
        targets.resolve("tpuv5e-8")
    with pytest.raises(ValueError, match="12 GPUs: expected up to 8 or a multiple of 8"):
        targets.resolve("gpu:h100x12")


def test_tpu_collectives_follow_the_mesh(tpu_rows):
    data, fsdp, tensor = (tpu_rows[k]["collectives"] for k in ("data", "fsdp", "tensor"))
    assert data["all-reduce"]["count"] >= 1 and data["all-gather"]["count"] == 0 == data["reduce-scatter"]["count"]
    # fsdp: parameters gathered before use; on TPU the gradient reduction to shards is an all-reduce fused with
    # the slice or a reduce-scatter
    assert fsdp["all-gather"]["count"] >= 1 and fsdp["all-reduce"]["count"] + fsdp["reduce-scatter"]["count"] >= 1
    assert tensor["all-reduce"]["count"] > data["all-reduce"]["count"]
    # data parallelism sends each gradient twice around the ring (7/8 of it each time)
    grads = tpu_rows["data"]["memory"]["arguments"] / 4  # parameters, two AdamW moments, EMA: a quarter each
    assert 0.9 * 2 * 7 / 8 * grads <= data["all-reduce"]["moved"] <= 1.2 * 2 * 7 / 8 * grads


def test_tpu_plan_fits_ranks_and_gives_mfu(tpu_rows):
    data, fsdp = tpu_rows["data"], tpu_rows["fsdp"]
    assert fsdp["memory"]["total"] < data["memory"]["total"]
    for row in tpu_rows.values():
        assert row["fits"] is True and row["target"]["name"] == "tpu:v5e-8" and "step_seconds" not in row
        assert row["attention"] == "xla"  # "auto" means what it would on a TPU, not on this CPU host
        assert row["bound_seconds"] > 0 and 0 < row["mfu_at_bound"] <= 1
        # the per-axis traffic is the per-kind traffic, regrouped
        assert sum(t["moved"] for t in row["traffic"].values()) == sum(c["moved"] for c in row["collectives"].values())


def test_tpu_roofline_charges_each_axis_its_links(tpu_rows):
    """Hand-checked on a v5e-8 (a 2 x 4 mesh of chips, no wraparound below a 16-chip edge): an axis over all 8
    chips spans both torus dimensions, one 50 GB/s link each way per dimension (400 GB/s bidirectional per chip
    over 4 links); 197 TFLOP/s and 819 GB/s HBM (Google's v5e page)."""
    for name in ("data", "fsdp"):
        row = tpu_rows[name]
        assert set(row["traffic"]) == {name} and row["traffic"][name]["bandwidth"] == 2 * 50e9
        c = row["cost"]
        expected = max(c["flops"] / 197e12, c["bytes_accessed"] / 819e9) + row["traffic"][name]["moved"] / 100e9
        assert row["bound_seconds"] == pytest.approx(expected, rel=1e-9)
        # XLA's own lower bound is reported beside it, a positive time in the same range (not derived from ours)
        assert 0 < row["xla_optimal_seconds"] and 0.2 < row["xla_optimal_seconds"] / row["bound_seconds"] < 5
    assert "tensor" in tpu_rows["tensor"]["traffic"]


def test_scanned_layers_are_costed_like_the_unrolled_stack(v5e):
    # depth 3: past the 1- and 2-layer twins, so the scanned cost is extrapolated, not one of the twins' own
    config = load_config("configs/dit.py:tiny", [*SMALL, "model.depth=3"])
    strategy = Strategy((2, 4, 1), 1)
    scanned = sharding.run_strategy(load_config("configs/dit.py:tiny", [*SMALL, "model.depth=3",
                                                                        "model.scan_layers=true"]),
                                    strategy, target=v5e)
    unrolled = sharding.run_strategy(config, strategy, target=v5e)
    assert scanned["cost_method"] == "unrolled at depth 1 and 2, extrapolated"
    assert scanned["cost"]["flops"] == pytest.approx(unrolled["cost"]["flops"], rel=0.01)
    assert scanned["collectives"]["all-gather"]["moved"] == pytest.approx(
        unrolled["collectives"]["all-gather"]["moved"], rel=0.05)  # fusion at layer boundaries: ~2 % here
    assert scanned["analytic_flops"] == unrolled["analytic_flops"]


@pytest.fixture(scope="module")
def h100_rows():
    """An 8 x H100 node's plans, compiled once for the two GPU tests below (a GPU compile here is ~15 CPU-s
    whatever the model): data and fsdp parallel, and data parallel again with full remat."""
    h100 = targets.resolve("gpu:h100x8")
    config = load_config("configs/dit.py:tiny", ONE_LAYER)
    strategies = {"data": Strategy((8, 1, 1), 4, remat="none"), "fsdp": Strategy((1, 8, 1), 4, remat="none"),
                  "data, full remat": Strategy((8, 1, 1), 4, remat="full")}
    return {name: sharding.run_strategy(config, strategy, target=h100) for name, strategy in strategies.items()}


def test_gpu_node_memory_plan_without_a_gpu(h100_rows):
    h100 = targets.resolve("gpu:h100x8")
    assert h100.device_count == 8 and h100.devices[0].device_kind == "NVIDIA H100 80GB HBM3"
    data, fsdp = h100_rows["data"], h100_rows["fsdp"]
    assert data["target"]["name"] == fsdp["target"]["name"] == "gpu:h100x8"
    assert fsdp["memory"]["total"] < data["memory"]["total"] and data["fits"] is True
    assert fsdp["collectives"]["reduce-scatter"]["count"] >= 1  # GPU keeps the reduce-scatter
    # XLA's cost analysis of the optimized GPU module: at least the model's FLOPs, no XLA lower bound on GPU
    assert data["cost"]["flops"] >= 0.9 * data["analytic_flops"] / 8 and data["cost"]["bytes_accessed"] > 0
    assert data["bound_seconds"] > 0 and data["xla_optimal_seconds"] is None and data["cost_method"] == "compiled"
    assert data["traffic"]["data"]["bandwidth"] == 450e9  # NVLink within the node


def test_gpu_remat_costs_more_than_no_remat(h100_rows):
    """The GPU roofline counts the FLOPs XLA compiled, recomputation included: full remat is slower at the bound
    than no remat for the same workload (the analytic FLOPs, the same for both, would say they are equal)."""
    none, full = h100_rows["data"], h100_rows["data, full remat"]
    assert (none["strategy"]["remat"], full["strategy"]["remat"]) == ("none", "full")
    assert none["analytic_flops"] == full["analytic_flops"]
    assert full["cost"]["flops"] > 1.1 * none["cost"]["flops"]
    assert full["bound_seconds"] > none["bound_seconds"]
    assert full["memory"]["temporaries"] < none["memory"]["temporaries"]


def test_link_bandwidth_per_mesh_axis():
    """NVLink within a node, the network across nodes; on a TPU torus, the links of the dimensions an axis spans
    (two per dimension where it wraps)."""
    h100 = targets.resolve("gpu:h100x16")  # two nodes of 8
    across, within = targets.mesh((16, 1, 1), h100), targets.mesh((2, 8, 1), h100)
    assert targets.axis_bandwidth(across, "data", h100) == 50e9  # 400 Gb/s per GPU between nodes
    assert targets.axis_bandwidth(within, "fsdp", h100) == 450e9  # NVLink
    assert targets.axis_bandwidth(within, "data", h100) == 50e9
    v5p = targets.TPU_CHIPS["v5p"]
    line = [(x, 0, 0) for x in range(4)]
    assert hardware.ici_bandwidth(v5p, line, (4, 4, 4)) == 200e9  # a whole cube wraps: both ways
    assert hardware.ici_bandwidth(v5p, line, (4, 4, 2)) == 100e9  # 2x4x4 (v5p-64) is no torus
    assert hardware.ici_bandwidth(v5p, line[:2], (4, 4, 4)) == 100e9  # part of a ring: one way round
    plane = [(x, y, 0) for x in range(4) for y in range(4)]
    assert hardware.ici_bandwidth(v5p, plane, (4, 4, 2)) == 200e9  # two dimensions, one link each
    v6e = targets.TPU_CHIPS["v6e"]
    assert hardware.ici_bandwidth(v6e, [(x, 0) for x in range(16)], (16, 16)) == 200e9
    assert hardware.ici_bandwidth(v6e, [(x, 0) for x in range(8)], (8, 8)) == 100e9
    with pytest.raises(ValueError, match="spans no torus dimension"):
        hardware.ici_bandwidth(v6e, [(1, 1), (1, 1)], (8, 8))


def test_a_gpu_module_calling_cublas_gives_no_cost_rather_than_an_undercount():
    call = '%gemm = (bf16[8,8]{1,0}, s8[4]{0}) custom-call(%a, %b), custom_call_target="__cublas$lt$matmul"'
    assert "cublas" in analysis.library_calls(call)
    assert analysis.library_calls('%d = f32[8,8]{1,0} dot(%a, %b), lhs_contracting_dims={1}') is None


def test_replica_groups_name_the_mesh_axes():
    names, shape = ("data", "fsdp", "tensor"), (2, 4, 1)
    line = "  %ar = f32[8]{0} all-reduce(f32[8]{0} %x), channel_id=1, replica_groups=GROUPS, to_apply=%add"
    assert analysis.traffic(line.replace("GROUPS", "[2,4]<=[8]"), shape, names) == {"fsdp": {"count": 1, "moved": 48}}
    assert analysis.traffic(line.replace("GROUPS", "[4,2]<=[2,4]T(1,0)"), shape, names) == {"data": {"count": 1, "moved": 32}}
    assert analysis.traffic(line.replace("GROUPS", "{{0,1,2,3,4,5,6,7}}"), shape, names)["data+fsdp"]["moved"] == 56
    permute = "  %cp = f32[8]{0} collective-permute(f32[8]{0} %x), source_target_pairs={{0,4},{4,0}}"
    assert analysis.traffic(permute, shape, names) == {"data": {"count": 1, "moved": 32}}


def test_a_gpu_plan_from_a_fresh_shell_needs_no_platform_setting(tmp_path):
    """As a user runs it: no JAX_PLATFORMS (conftest sets it for the tests), one process, the CUDA plugin installed
    but no driver. The failed CUDA backend must not take the plugin's topology API with it."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    out = tmp_path / "rows.jsonl"
    done = subprocess.run([sys.executable, "-m", "stableaudio_jax.cli", "bench", "sharding", "--config",
                           "configs/dit.py:tiny", *[f"--config.{o}" for o in ONE_LAYER], "--target", "gpu:h100x1",
                           "--no-progress", "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(out.read_text())
    assert row["target"]["name"] == "gpu:h100x1" and row["fits"] is True


def test_find_prints_the_fastest_strategy_that_fits(tmp_path, capsys):
    out = tmp_path / "find.jsonl"
    code = main(["bench", "sharding", "--config", "configs/dit.py:tiny", "--target", "tpu:v5e-8", "--find",
                 "--remat", "none,full", "--out", str(out), "--no-progress", *(f"--config.{o}" for o in ONE_LAYER)])
    assert code == 0
    found = json.loads(out.read_text())
    screened = found["screened"]
    assert [s["strategy"]["mesh"] for s in screened] == [
        {"data": 8, "fsdp": 1, "tensor": 1}, {"data": 4, "fsdp": 2, "tensor": 1},
        {"data": 2, "fsdp": 4, "tensor": 1}, {"data": 1, "fsdp": 8, "tensor": 1}]
    assert all(s["fits_estimate"] and s["strategy"]["remat"] == "none" for s in screened)  # the first rung fits
    best = found["best"]
    per_example = lambda s: s["bound_seconds"] / s["strategy"]["global_batch"]  # noqa: E731
    assert per_example(best) == pytest.approx(min(per_example(s) for s in screened))
    printed = capsys.readouterr().out
    assert f"best: {best['strategy']['name']} — global batch 8" in printed and "GiB per device of 16.00 GiB usable" in printed


def test_find_reports_when_nothing_fits(capsys):
    # a 16 GiB chip cannot hold an 8 k-frame window of a 1 k-wide DiT at batch 64 per device
    code = main(["bench", "sharding", "--config", "configs/dit.py:tiny", "--target", "tpu:v5e-4", "--find",
                 "--remat", "full", "--batch", "64", "--no-progress", "--config.model.embed_dim=1024",
                 "--config.model.num_heads=16",
                 "--config.model.depth=1", "--config.training.crop_frames=8192"])
    assert code == 1
    assert "nothing fits: 3 strategies screened" in capsys.readouterr().out


def test_generation_plan_costs_the_nested_scans(v5e, monkeypatch):
    """The generate workload: a scanned DiT inside the sampler's scan, costed from unrolled (depth, steps) twins;
    the fit reproduces a direct compile of the unrolled stack at one step."""
    from stableaudio_jax.bench import compiled as analysis
    from stableaudio_jax.bench import generation
    from stableaudio_jax.bench.generation import bilinear, compile_sampler, run_generation
    twins = {}  # the unrolled (depth, steps) samplers run_generation compiles, kept instead of compiled again here

    def recorded(config, strategy, target, steps):
        compiled = compile_sampler(config, strategy, target, steps)
        if not compiled[1].model.scan_layers:
            twins[(int(compiled[1].model.depth), steps)] = compiled[0]
        return compiled
    monkeypatch.setattr(generation, "compile_sampler", recorded)
    options = [*SMALL, "model.depth=3", "model.scan_layers=true"]
    strategy = Strategy((1, 1, 4), 1)  # one clip, the heads over 4 chips
    row = run_generation(load_config("configs/dit.py:tiny", options), strategy, targets.resolve("tpu:v5e-4"), 10)
    assert row["workload"] == "generate" and row["steps"] == 10 and row["fits"] is True
    assert row["memory"]["total"] == max(p["total"] for p in row["memory"]["parts"].values())
    assert row["bound_seconds"] > 0 and row["collectives"]["all-reduce"]["count"] > 0  # tensor parallel
    unrolled = load_config("configs/dit.py:tiny", [*SMALL, "model.depth=3"])
    direct = analysis.cost(compile_sampler(unrolled, strategy, targets.resolve("tpu:v5e-4"), 1)[0])["flops"]
    assert set(twins) == {(1, 1), (2, 1), (1, 2), (2, 2)}
    small = {key: analysis.cost(executable)["flops"] for key, executable in twins.items()}
    assert bilinear(small, 3, 1) == pytest.approx(direct, rel=0.01)
    assert bilinear({(1, 1): 1.0, (2, 1): 3.0, (1, 2): 2.0, (2, 2): 5.0}, 4, 3) == 15  # -1 + d + d s


def test_generate_command_writes_rows(tmp_path, capsys):
    """Two clip lengths: one row each, more decode chunks for the longer one, and one decode-chunk compile for
    both (it is the workload's slowest compile and does not depend on the length)."""
    from stableaudio_jax.bench import generation
    generation._DECODE_CHUNKS.clear()
    out = tmp_path / "gen.jsonl"
    assert main(["bench", "sharding", "--workload", "generate", "--target", "tpu:v5e-4", "--mesh", "4x1x1",
                 "--steps", "8", "--seconds", "0.04,0.05", "--out", str(out), "--no-progress",
                 *(f"--config.{o}" for o in ONE_LAYER)]) == 0
    short, long = (json.loads(line) for line in out.read_text().splitlines())
    assert short["workload"] == "generate" and short["strategy"]["global_batch"] == 4
    assert 1 < short["decode_chunks"] < long["decode_chunks"] and len(generation._DECODE_CHUNKS) == 1
    assert short["memory"]["parts"]["decode_chunk"] == long["memory"]["parts"]["decode_chunk"]
    assert long["bound_seconds"] > short["bound_seconds"]
    assert long["bound_seconds"] == pytest.approx(sum(long["bound_parts"].values()))  # the phases in sequence
    assert long["bound_parts"]["decode"] == pytest.approx(short["bound_parts"]["decode"] * long["decode_chunks"]
                                                          / short["decode_chunks"])
    assert "| 4x1x1 b1 s=0.04 | 4 |" in capsys.readouterr().out


def test_mfu_uses_the_chip_it_runs_on():
    from stableaudio_jax.parallel import hardware
    h100 = hardware.CHIPS["NVIDIA H100 80GB HBM3"]
    assert hardware.mfu(989e12 * 8 * 0.5, 1.0, h100, 8) == pytest.approx(0.5)
    assert hardware.mfu(1e12, 1.0, None, 8) is None and hardware.local_chip() is None  # the CPU test devices


def test_vae_training_plan(tmp_path):
    """vae-train: the generator and discriminator steps of the adversarial VAE, both compiled (on the local
    devices: the TPU compiler takes minutes over the spectral losses of even the tiny VAE on 2 cores). Data
    parallelism gathers nothing: every FFT (spectral losses, STFT discriminators) runs on each device's own rows,
    where XLA alone would all-gather the batch to every device and compute every row 8 times."""
    out = tmp_path / "vae.jsonl"
    # one resolution of each FFT instead of seven spectral and three discriminator ones: the same code per
    # resolution, and each kind is still there to be gathered or not (fewer to compile)
    fewer_ffts = ["spectral.fft_sizes=(128,)", "spectral.hop_sizes=(32,)", "discriminator.n_ffts=(128,)",
                  "discriminator.hops=(32,)"]
    assert main(["bench", "sharding", "--workload", "vae-train", "--config", "configs/vae.py:tiny", "--mesh",
                 "8x1x1,1x8x1", "--out", str(out), "--no-progress",
                 *(f"--config.training.{o}" for o in fewer_ffts)]) == 0
    data, fsdp = (json.loads(line) for line in out.read_text().splitlines())
    assert fsdp["workload"] == "vae-train" and set(fsdp["memory"]["parts"]) == {"generator", "discriminator"}
    assert fsdp["memory"]["total"] == max(p["total"] for p in fsdp["memory"]["parts"].values())
    assert fsdp["cost"]["flops"] > 0 and fsdp["fits"] is None  # host memory: no HBM to fit
    assert fsdp["collectives"]["all-gather"]["count"] >= 2  # each step gathers its fsdp-sharded weights
    assert data["collectives"]["all-gather"]["count"] == 0 and data["collectives"]["all-reduce"]["count"] >= 1


def test_flash_attention_is_a_strategy_on_tpu(v5e):
    """The Pallas flash kernel compiles for a TPU slice inside the sharded step (per shard) and keeps no T x T
    scores: far fewer temporaries than XLA's attention at a long window."""
    # one layer is enough (and half the compile); at 2048 frames the T x T scores dominate XLA's temporaries
    # (at 1024 they do not: there flash and XLA plan about the same)
    config = load_config("configs/dit.py:tiny", [*ONE_LAYER, "training.crop_frames=2048"])
    xla, flash = (sharding.run_strategy(config, Strategy((8, 1, 1), 1, attention=impl), target=v5e)
                  for impl in ("xla", "flash"))
    assert flash["attention"] == "flash" and flash["fits"] is True
    assert flash["memory"]["temporaries"] < 0.5 * xla["memory"]["temporaries"]


@pytest.mark.parametrize("message,fits_memory", [
    ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. Used 20.50G of "
     "15.75G hbm. Exceeded hbm capacity by 4.75G.", int(20.5 * 2 ** 30)),
    ("INVALID_ARGUMENT: a sharding this program cannot take", None),
])
def test_screening_says_does_not_fit_only_for_want_of_memory(monkeypatch, message, fits_memory):
    """The planner's screen: the compiler's out-of-memory refusal is a candidate that does not fit (with what it
    needs); any other failure stops the search naming the strategy, instead of reading as "does not fit"."""
    from types import SimpleNamespace

    from stableaudio_jax.bench import planner

    def refuse(*args, **kwargs):
        raise RuntimeError(message)
    monkeypatch.setattr(sharding, "scanned_layers", lambda config: False)  # screened by a real compile
    monkeypatch.setattr(sharding, "run_strategy", refuse)
    config, strategy = load_config("configs/dit.py:tiny", SMALL), Strategy((2, 4, 1), 1)
    target = SimpleNamespace(name="tpu:v5e-8")
    if fits_memory is None:
        with pytest.raises(planner.ScreeningError, match=r"screening .* on tpu:v5e-8 failed \(not for want of "
                                                         r"memory\): INVALID_ARGUMENT: a sharding"):
            planner.screen(config, strategy, target)
        return
    screened = planner.screen(config, strategy, target)
    assert screened.fits is False and screened.memory == fits_memory and "RESOURCE_EXHAUSTED" in screened.error


def test_an_sa3_generation_plan_samples_as_its_config_says_and_decodes_with_same(tmp_path):
    """SA3's generate workload: the sampler and guidance of the config's generation section (ping-pong unguided, as
    the post-trained models run), the latent length from SAME's rate, the SAME decoder in its config's chunks."""
    from stableaudio_jax.bench import generation
    out = tmp_path / "sa3.jsonl"
    # SA3 tiny: 2 kHz, SAME tiny's 32x (62.5 frames/s): 4.8 s is 300 frames, 3 chunks of 128 (+ 2 x 32 overlap)
    assert main(["bench", "sharding", "--workload", "generate", "--config", "configs/sa3.py:tiny", "--target",
                 "tpu:v5e-4", "--mesh", "4x1x1", "--steps", "8", "--seconds", "4.8", "--out", str(out),
                 "--no-progress", "--config.generation.sampler=pingpong"]) == 0
    row = json.loads(out.read_text())
    assert (row["workload"], row["sampler"], row["cfg"], row["steps"]) == ("generate", "pingpong", False, 8)
    assert row["frames"] == 300 and row["audio_seconds"] == pytest.approx(4.8) and row["decode_chunks"] == 3
    assert set(row["memory"]["parts"]) == {"sampler", "decode_chunk"} and row["fits"] is True
    assert row["bound_parts"]["sampling"] > 0 and row["bound_parts"]["decode"] > 0
    # guidance as the config says: a cfg_scale other than 1 doubles each step's batch (base models, 50 steps)
    guided = load_config("configs/sa3.py:tiny", ["generation.cfg_scale=3.0"])
    assert generation.guidance(guided) == {"sampler": "euler", "cfg": True}
    assert generation.guidance(load_config("configs/dit.py:tiny")) == {"sampler": "dpmpp-3m-sde", "cfg": True}
