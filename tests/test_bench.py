"""`bench sharding`: the compiled step of each strategy holds the collectives its mesh implies, FSDP and tensor
parallelism lower per-device memory against pure data parallelism, the analytic FLOPs agree with XLA's count, and
the command writes JSON lines, a table and a plot (and refuses a bad mesh with the valid choices)."""
import json

import jax
import pytest

from stableaudio_jax.bench import compiled as analysis
from stableaudio_jax.bench.sharding import run_strategy
from stableaudio_jax.bench.strategies import Strategy, apply, factorisations, grid, parse_mesh
from stableaudio_jax.cli import main
from stableaudio_jax.config_loader import load_config

SMALL = ["model.embed_dim=128", "model.depth=2", "model.num_heads=4", "training.crop_frames=32"]


@pytest.fixture(scope="module")
def rows():
    config = load_config("configs/dit.py:tiny", SMALL)
    meshes = {"data": (8, 1, 1), "fsdp": (1, 8, 1), "tensor": (2, 1, 4)}
    return {name: run_strategy(config, Strategy(mesh, per_device_batch=1 if name != "tensor" else 4),
                               measure=False) for name, mesh in meshes.items()}


def test_each_mesh_compiles_to_its_collectives(rows):
    data, fsdp, tensor = (rows[k]["collectives"] for k in ("data", "fsdp", "tensor"))
    # data parallel: parameters replicated, gradients summed over the batch devices, nothing gathered
    assert data["all-reduce"]["count"] >= 1 and data["all-gather"]["count"] == 0
    # fsdp: parameters gathered before use; gradients reduced back to shards (XLA's CPU backend writes the
    # reduce-scatter as all-reduce + slice; TPU and GPU keep reduce-scatter)
    assert fsdp["all-gather"]["count"] >= 1
    assert fsdp["reduce-scatter"]["count"] + fsdp["all-reduce"]["count"] >= 1
    # tensor parallel: partial sums of the head / MLP-sharded matmuls reduced within each layer
    assert tensor["all-reduce"]["count"] > data["all-reduce"]["count"]
    # the gradient all-reduce of data parallelism moves about one copy of the trainable parameters
    assert data["all-reduce"]["bytes"] >= 0.9 * rows["data"]["memory"]["arguments"] / 4


def test_sharded_parameters_lower_per_device_memory(rows):
    data, fsdp, tensor = (rows[k]["memory"] for k in ("data", "fsdp", "tensor"))
    assert fsdp["arguments"] < data["arguments"] / 4      # state sharded 8 ways (norms and biases stay whole)
    assert fsdp["total"] < data["total"] and tensor["arguments"] < data["arguments"]
    assert all(m["total"] == m["arguments"] + m["outputs"] - m["aliased"] + m["temporaries"] for m in
               (data, fsdp, tensor))
    assert data["aliased"] > 0.9 * data["outputs"]  # the train state is donated


def test_analytic_flops_agree_with_the_compiler(rows):
    row = rows["data"]
    compiled = row["cost"]["flops"] * row["devices"]
    assert 0.8 < row["analytic_flops"] / compiled < 1.1, (row["analytic_flops"], compiled)


def test_collectives_and_bytes_from_hlo_text():
    hlo = "\n".join([
        "  %all-reduce.3 = f32[128,64]{1,0} all-reduce(%x), channel_id=2, replica_groups={{0,1},{2,3}}, to_apply=%add",
        "  %ags = (bf16[8,16]{1,0}, bf16[64,16]{1,0}) all-gather-start(%y), replica_groups=[1,8]<=[8], dimensions={0}",
        "  %agd = bf16[64,16]{1,0} all-gather-done(%ags)",
        "  ROOT %rs = f32[4]{0} reduce-scatter(%z), replica_groups=mesh['axis_0'=2,'axis_1'=4], "
        "device_ids=([2,4]) {'axis_1'}, dimensions={0}",
        "  %cps = (f32[6]{0}, f32[6]{0}, u32[], u32[]) collective-permute-start(%w), source_target_pairs={{0,1},{1,0}}",
        "  %f = f32[2]{0} fusion(%all-reduce.3), kind=kLoop",
    ])
    found = analysis.collectives(hlo)
    # bytes: the results; moved: what each device sends under the ring algorithm for its group size
    assert found["all-reduce"] == {"count": 1, "bytes": 128 * 64 * 4, "moved": 2 * 128 * 64 * 4 // 2}
    assert found["all-gather"] == {"count": 1, "bytes": 64 * 16 * 2, "moved": 64 * 16 * 2 * 7 // 8}
    assert found["reduce-scatter"] == {"count": 1, "bytes": 16, "moved": 16 * 3}  # groups of 4 (axis_1)
    assert found["collective-permute"] == {"count": 1, "bytes": 24, "moved": 24}
    assert found["all-to-all"]["count"] == 0


def test_strategies_become_config_overrides():
    config = load_config("configs/dit.py:tiny", [])
    s = Strategy((2, 2, 2), per_device_batch=3, seconds=1.0, remat="full", scan_layers=True, attention="xla")
    applied = apply(config, s)
    assert dict(applied.mesh) == {"data": 2, "fsdp": 2, "tensor": 2} and applied.training.batch_size == 12
    assert applied.training.crop_frames == round(config.vae.sample_rate / 8)  # tiny VAE: 8x downsampling
    assert (applied.model.remat, applied.model.scan_layers, applied.model.attention_impl) == ("full", True, "xla")
    assert config.training.batch_size != 12  # the original is untouched
    assert [x.mesh for x in grid(["-1x2x1", "8x1x1"], 8, remats=("none", "full"))] == [(4, 2, 1)] * 2 + [(8, 1, 1)] * 2
    assert apply(load_config("configs/dit.py:tiny", ["model.remat=full"]), Strategy((8, 1, 1))).model.remat == "full"
    assert (1, 1, 8) in factorisations(8) and all(a * b * c == 8 for a, b, c in factorisations(8))
    unet = load_config("configs/unet.py:tiny", [])
    with pytest.raises(ValueError, match="remat='full': the unet1d model has no remat option"):
        apply(unet, Strategy((8, 1, 1), remat="full"))


def test_bad_meshes_name_the_value_and_the_devices():
    with pytest.raises(ValueError, match="needs 6 devices; 8 are available"):
        parse_mesh("3x2x1", 8)
    with pytest.raises(ValueError, match="mesh '4by2': expected data x fsdp x tensor"):
        parse_mesh("4by2", 8)


def test_bench_command_writes_rows_table_and_plot(tmp_path, capsys):
    out, plot, table = tmp_path / "rows.jsonl", tmp_path / "bench.png", tmp_path / "bench.md"
    code = main(["bench", "sharding", "--config", "configs/dit.py:tiny", "--mesh", "8x1x1,2x2x2", "--repeats", "1",
                 "--out", str(out), "--plot", str(plot), "--markdown", str(table), "--no-progress",
                 *(f"--config.{o}" for o in SMALL)])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["strategy"]["name"] for r in rows] == ["8x1x1 b1", "2x2x2 b1"]  # remat etc.: as configured
    assert all(r["step_seconds"] > 0 and r["devices"] == jax.device_count() for r in rows)
    assert plot.stat().st_size > 10_000 and "| 2x2x2 b1 | 4 |" in table.read_text()
    assert "| 8x1x1 b1 | 8 |" in capsys.readouterr().out
    assert main(["bench", "sharding", "--mesh", "3x3x1", "--no-progress"]) == 2
    assert "mesh shape {'data': 3, 'fsdp': 3, 'tensor': 1} needs 9 devices; 8 are available" in capsys.readouterr().err


def test_an_sa3_training_step_is_planned_like_any_denoiser():
    """`bench sharding` on configs/sa3.py: the SA3 step (its own objective) compiles per strategy, its text shape
    is T5Gemma's, --seconds follows SAME's frames, a scanned SA3 DiT is costed from unrolled twins, and FSDP lowers
    per-device memory against data parallelism."""
    from stableaudio_jax.bench.sharding import scanned_layers
    assert scanned_layers(load_config("configs/sa3.py:small")) == 20  # its cost fitted from unrolled twins
    config = load_config("configs/sa3.py:tiny")
    assert apply(config, Strategy((8, 1, 1), 1, seconds=0.512, remat="full")).training.crop_frames == 32
    data, fsdp = (run_strategy(config, Strategy(mesh, 1, remat="full"), measure=False)
                  for mesh in ((8, 1, 1), (1, 8, 1)))
    assert fsdp["memory"]["arguments"] < data["memory"]["arguments"]
