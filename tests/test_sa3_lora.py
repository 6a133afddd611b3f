"""Stable Audio 3 adapter files applied as the reference applies them: files written by the reference's LoRA code
on tests/data/sa3_tiny/small (benchmarks/make_sa3_checkpoints.py: lora, dora-rows, dora-cols, bora, lora-xs and
dora-rows-xs, and lora then dora-cols chained) and the weights its parametrisations give at strength 0.7."""
from pathlib import Path

import numpy as np
import pytest

from stableaudio_jax.convert.sa3_dit import sa3_conditioner_params_from_state_dict, sa3_dit_params_from_state_dict
from stableaudio_jax.convert.sa3_lora import apply_sa3_loras, read_sa3_lora
from stableaudio_jax.convert.stable_audio_3 import conditioning_config, dit_config
from stableaudio_jax.convert.state_dict import load_json, read_state_dict
from stableaudio_jax.models.sa3_conditioning import SA3Conditioner
from stableaudio_jax.models.sa3_dit import sa3_dit_from_config

DATA = Path(__file__).parent / "data" / "sa3_tiny"
LORAS = DATA / "loras"
CHAINS = {kind: [kind] for kind in ("lora", "dora-rows", "dora-cols", "bora", "lora-xs", "dora-rows-xs")}
CHAINS["lora+dora-cols"] = ["lora", "dora-cols"]


@pytest.fixture(scope="module")
def small():
    config = load_json(DATA / "small" / "model_config.json")
    state = read_state_dict(DATA / "small" / "model.safetensors")
    dit = sa3_dit_from_config(dit_config(config["model"]["diffusion"], "small"))
    cond = conditioning_config(config["model"]["conditioning"], "small")
    conditioner = SA3Conditioner(cond["text_dim"], cond["seconds_features"], cond["seconds_max"])
    params = {"params": {"dit": sa3_dit_params_from_state_dict(state, dit)["params"],
                         "conditioner": sa3_conditioner_params_from_state_dict(state, conditioner)["params"]}}
    return params, dit.scan_layers


def _reference_layout(params, scanned):
    """The adapted layers' weights [out, in] under the names the baked file uses."""
    from stableaudio_jax.convert.dit import unstack_blocks
    dit = unstack_blocks(params["params"]["dit"]) if scanned else params["params"]["dit"]
    block = dit["blocks_1"]["self_attn"]
    return {"model.transformer.layers.1.self_attn.to_qkv": block["to_qkv"]["kernel"].reshape(32, -1).T,
            "model.transformer.layers.1.self_attn.to_out": block["to_out"]["kernel"].reshape(32, -1).T,
            "model.to_global_embed.0": dit["to_global_embed"]["fc1"]["kernel"].T,
            "model.to_global_embed.2": dit["to_global_embed"]["fc2"]["kernel"].T,
            "model.preprocess_conv": dit["preprocess_conv"]["kernel"].T,
            "conditioner.conditioners.seconds_total.embedder.embedding.1":
                params["params"]["conditioner"]["seconds_total"]["embedding"]["kernel"].T}


@pytest.mark.parametrize("case", sorted(CHAINS))
def test_adapted_weights_equal_the_reference_s(small, case):
    params, scanned = small
    baked = np.load(LORAS / "baked.npz")
    merged = apply_sa3_loras(params, [(LORAS / f"{k}.safetensors", 0.7) for k in CHAINS[case]], scanned)
    ours = _reference_layout(merged, scanned)
    expected = {k.split("/", 1)[1]: baked[k] for k in baked.files if k.startswith(f"{case}/")}
    assert sorted(expected) == sorted(ours)
    before = _reference_layout(params, scanned)
    # -XS bases are singular vectors: the reference takes them from a float32 SVD, ours from a float64 one (the
    # two agree to the float32 SVD's accuracy, ~3e-5 here); every other type is plain float32 arithmetic
    atol = 1e-4 if "xs" in case else 2e-5
    for name, weight in expected.items():
        np.testing.assert_allclose(np.asarray(ours[name]), weight, atol=atol, rtol=1e-5, err_msg=name)
        assert np.abs(np.asarray(before[name]) - weight).max() > 1e-3  # the adapter changed it


def test_strength_zero_leaves_dora_weights_and_bad_files_are_named(small, tmp_path):
    params, scanned = small
    unchanged = apply_sa3_loras(params, [(LORAS / "dora-rows.safetensors", 0.0)], scanned)
    for name, weight in _reference_layout(unchanged, scanned).items():
        np.testing.assert_array_equal(np.asarray(weight), np.asarray(_reference_layout(params, scanned)[name]))
    modules, config = read_sa3_lora(LORAS / "bora.safetensors")
    assert (config["adapter_type"], config["rank"], config["alpha"]) == ("bora", 2, 3.0)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        read_sa3_lora(tmp_path / "nope.safetensors")
    from safetensors.numpy import save_file
    save_file({"model.x.parametrizations.weight.0.lora_A": np.zeros((2, 3), np.float32)}, str(tmp_path / "odd.st"),
              metadata={"lora_config": '{"adapter_type": "vera"}'})
    with pytest.raises(ValueError, match="adapter_type 'vera' is not known"):
        read_sa3_lora(tmp_path / "odd.st")
    save_file({"model.nowhere.parametrizations.weight.0.lora_A": np.zeros((2, 3), np.float32),
               "model.nowhere.parametrizations.weight.0.lora_B": np.zeros((3, 2), np.float32)},
              str(tmp_path / "stray.st"), metadata={"lora_config": '{"adapter_type": "lora"}'})
    with pytest.raises(ValueError, match="module 'model.nowhere' is not a layer of this model's DiT"):
        apply_sa3_loras(params, [(tmp_path / "stray.st", 1.0)], scanned)
