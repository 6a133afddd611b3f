"""The model store: every kind saves and loads exactly, the conditioning widths follow one value, and every way a
stored model can be wrong (newer format, missing or altered files, other weights, another kind, a swapped part)
is a clear error naming the file."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import model_config

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.models.t5 import T5Encoder
from stableaudio_jax.store import (VAE, StoreError, T5TextEncoder, TextToAudioModel, count_parameters,
                                   diffusion_model, load_diffusion, load_text_encoder, load_text_to_audio, load_vae,
                                   read_info, resolve_conditioning, save_diffusion, save_text_encoder,
                                   save_text_to_audio, save_vae, vae_from_config, weights_sha256)
from stableaudio_jax.store.builders import diffusion_model_from_config
from stableaudio_jax.store.tokenizers import T5Tokenizer, train_sentencepiece


def _equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny VAE, T5 (with its sentencepiece model) and DiT with random weights."""
    root = tmp_path_factory.mktemp("parts")
    vae_cfg = load_config("configs/vae.py:tiny").model
    module = vae_from_config(vae_cfg)
    vae = VAE(module, jax.jit(lambda k: module.init(k, jnp.zeros((1, 64, 2)), sample=False))(jax.random.key(0)),
              vae_cfg)
    t5_cfg = load_config("configs/t5.py:tiny").model
    t5 = T5Encoder(**t5_cfg)
    spiece = train_sentencepiece(["a dog barking", "rain on a tin roof", "slow synth pad"] * 20,
                                 root / "spiece.model", vocab_size=40)
    t5_params = jax.jit(lambda k: t5.init(k, jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool)))(jax.random.key(1))
    text = T5TextEncoder(t5, t5_params, T5Tokenizer(spiece, 8), 8, "tiny t5")
    config = resolve_conditioning(load_config("configs/dit.py:tiny"), text.width, 8)
    model = diffusion_model_from_config(config)
    params = jax.tree_util.tree_map(np.asarray, _init(model, config))
    diffusion = diffusion_model(config, params, "tiny dit")
    bundle = TextToAudioModel(text, diffusion, vae, _bundle_config(), "tiny")
    return root, bundle


def _init(model, config, frames=8):
    import flax.linen as nn
    text = jnp.zeros((1, int(config.conditioning.text.max_length), int(config.conditioning.text.width)))
    return jax.jit(lambda key: nn.unbox(model.init(key, jnp.zeros((1, frames, model.latent_channels)), text,
                                                   jnp.ones(text.shape[:2], bool))))(jax.random.key(2))


def _bundle_config():
    import ml_collections

    from stableaudio_jax.diffusion.samplers import default_sampling
    return ml_collections.ConfigDict({"audio": {"sample_rate": 44100, "channels": 2, "sample_size": 512},
                                      "sampling": default_sampling("v")})


def test_every_kind_round_trips(parts, tmp_path):
    root, bundle = parts
    save_vae(tmp_path / "vae", bundle.vae, provenance={"step": 7})
    vae = load_vae(tmp_path / "vae")
    _equal(vae.params, bundle.vae.params)
    assert vae.sha256 == bundle.vae.sha256 == read_info(tmp_path / "vae").weights_sha256
    assert read_info(tmp_path / "vae").provenance == {"step": 7}

    save_text_encoder(tmp_path / "text", bundle.text)
    text = load_text_encoder(tmp_path / "text")
    _equal(text.params, bundle.text.params)
    ids, mask = text.tokenize(["a dog barking"])
    np.testing.assert_array_equal(ids, bundle.text.tokenize(["a dog barking"])[0])
    np.testing.assert_array_equal(text.encode(ids, mask), bundle.text.encode(ids, mask))
    assert load_text_encoder(tmp_path / "text", max_length=5).tokenize("x")[0].shape == (1, 5)

    save_diffusion(tmp_path / "diffusion", bundle.diffusion)
    diffusion = load_diffusion(tmp_path / "diffusion")
    _equal(diffusion.params, bundle.diffusion.params)
    assert diffusion.config.to_dict() == bundle.diffusion.config.to_dict()

    save_text_to_audio(tmp_path / "bundle", bundle)
    loaded = load_text_to_audio(tmp_path / "bundle")
    _equal(loaded.diffusion.params, bundle.diffusion.params)
    assert read_info(tmp_path / "bundle").kind == "text-to-audio"
    # a bundle's parts serve on their own: encode --vae / --text-encoder take the bundle
    _equal(load_vae(tmp_path / "bundle").params, bundle.vae.params)
    assert load_text_encoder(tmp_path / "bundle").source == str(tmp_path / "bundle" / "text_encoder")


def test_the_u_net_and_a_text_projection_round_trip(parts, tmp_path):
    _, bundle = parts
    small = ["model.factors=(1,2)", "model.multipliers=(1,1,1)", "model.num_blocks=(1,1)", "model.attentions=(0,1,1)"]
    config = resolve_conditioning(load_config("configs/unet.py:tiny", ["conditioning.cond_dim=16", *small]), 32, 4)
    assert config.model.context_features == 16 and config.model.context_max_length == 6
    model = diffusion_model_from_config(config)
    params = jax.tree_util.tree_map(np.asarray, _init(model, config, frames=16))
    assert params["text_projection"]["params"]["proj"]["kernel"].shape == (32, 16)
    save_diffusion(tmp_path / "unet", diffusion_model(config, params))
    loaded = load_diffusion(tmp_path / "unet")
    assert loaded.model.is_unet and loaded.model.text_projection is not None
    x, t = np.ones((1, 16, 8), np.float32), np.full((1,), 0.5, np.float32)
    text, mask = np.ones((1, 4, 32), np.float32), np.ones((1, 4), bool)
    secs = np.zeros(1, np.float32)
    outs = [jax.jit(lambda p, m=m: m.model.predict(p, x, t, m.model.condition(p, text, mask, secs, secs)))(m.params)
            for m in (loaded, diffusion_model(config, params))]
    np.testing.assert_array_equal(outs[0], outs[1])


def test_widths_follow_cond_dim():
    config = resolve_conditioning(load_config("configs/dit.py:tiny", ["conditioning.cond_dim=48"]), 32)
    assert (config.model.cond_token_dim, config.model.global_cond_dim, config.conditioning.timing.features) == (
        48, 96, 48)
    with pytest.raises(ValueError, match=r"config.model.global_cond_dim=100 disagrees with conditioning.cond_dim x 2"):
        resolve_conditioning(load_config("configs/dit.py:tiny", ["model.global_cond_dim=100"]), 32)
    with pytest.raises(ValueError, match=r"config.conditioning.timing.features=8 disagrees"):
        resolve_conditioning(load_config("configs/unet.py:tiny", ["conditioning.timing.features=8"]), 32)
    assert model_config("configs/unet.py:sa1").context_max_length == 79  # 77 CLAP tokens + 2 timing tokens


def test_parameter_counts_of_every_config(capsys):
    from stableaudio_jax.cli import main
    assert count_parameters(load_config("configs/vae.py:sao")) == {"vae": 156_112_514}
    assert count_parameters(load_config("configs/t5.py:t5-base")) == {"text": 109_628_544}
    assert count_parameters(load_config("configs/unet.py:sa1"))["denoiser"] == 906_679_744
    assert count_parameters(load_config("configs/vae.py:sa1")) == {"vae": 133_431_300}  # SA 1.0's DAC VAE
    sa2 = load_config("configs/dit.py:sa2")  # SA 2.0: SAO's DiT on CLAP features, 285 s windows
    assert count_parameters(sa2)["denoiser"] == 1_056_828_544 and sa2.audio.sample_size // 2048 == 6144
    assert main(["show-config", "configs/dit.py:sao", "--params"]) == 0
    out = capsys.readouterr().out
    assert "parameters (denoiser): 1,056,828,544" in out and "parameters (conditioners): " in out


def _stored(parts, tmp_path, name="bundle"):
    save_text_to_audio(tmp_path / name, parts[1])
    return tmp_path / name


def _edit_manifest(path, **changes):
    manifest = json.loads((path / "stableaudio_jax.json").read_text())
    manifest.update(changes)
    (path / "stableaudio_jax.json").write_text(json.dumps(manifest))


def test_format_versions_and_kinds_are_checked(parts, tmp_path):
    path = _stored(parts, tmp_path)
    vae = path / "vae"
    _edit_manifest(vae, version=3)
    with pytest.raises(StoreError, match=r"vae/stableaudio_jax.json: format version 3 was written by a newer"):
        load_text_to_audio(path)
    _edit_manifest(vae, version=1)
    with pytest.raises(StoreError, match=r"format version 1 \(stableaudio-jax before the model store\)"):
        load_vae(vae)
    _edit_manifest(vae, version=2, kind="banana")
    with pytest.raises(StoreError, match=r"model kind 'banana' is unknown"):
        load_vae(vae)
    _edit_manifest(vae, kind="vae", config=dict(json.loads((vae / "stableaudio_jax.json").read_text())["config"],
                                                type="encodec_vae"))
    with pytest.raises(StoreError, match=r"vae: cannot build the stored vae model .*VAE type 'encodec_vae' is not "
                                         r"known"):
        load_vae(vae)
    text = path / "text_encoder"
    _edit_manifest(text, config=dict(json.loads((text / "stableaudio_jax.json").read_text())["config"], type="bert"))
    with pytest.raises(StoreError, match=r"text_encoder: text encoder type 'bert' is not known"):
        load_text_encoder(text)
    with pytest.raises(StoreError, match=r"a stored 'diffusion' model; expected 'vae' or 'text-to-audio'"):
        load_vae(path / "diffusion")
    with pytest.raises(StoreError, match=r"no stableaudio_jax.json; not a stableaudio-jax stored model"):
        load_text_to_audio(tmp_path)
    (path / "stableaudio_jax.json").write_text("{ broken")
    with pytest.raises(StoreError, match=r"unreadable manifest"):
        load_text_to_audio(path)


def test_files_and_weights_must_be_the_stored_ones(parts, tmp_path):
    from safetensors.numpy import load_file, save_file
    path = _stored(parts, tmp_path)
    (path / "text_encoder" / "spiece.model").unlink()
    with pytest.raises(StoreError, match=r"text_encoder/spiece.model: missing; the manifest .* lists it"):
        load_text_to_audio(path)
    shutil.copy(parts[0] / "spiece.model", path / "text_encoder" / "spiece.model")
    with open(path / "text_encoder" / "spiece.model", "ab") as f:
        f.write(b"x")
    with pytest.raises(StoreError, match=r"spiece.model: content differs from the manifest's sha256"):
        load_text_encoder(path / "text_encoder")
    weights = path / "vae" / "weights.safetensors"
    state = load_file(str(weights))
    key = sorted(state)[0]
    state[key] = state[key] + 1e-3  # the same shapes, other values
    save_file(state, str(weights))
    with pytest.raises(StoreError, match=r"vae/weights.safetensors: the weights' content hash does not match"):
        load_vae(path / "vae")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreError, match=r"weights.safetensors: unreadable weights file .*truncated or corrupt"):
        load_vae(path / "vae")


def test_a_config_that_does_not_fit_the_weights_is_refused(parts, tmp_path):
    path = tmp_path / "vae"
    save_vae(path, parts[1].vae)
    manifest = json.loads((path / "stableaudio_jax.json").read_text())
    manifest["config"]["channels"] = 16
    (path / "stableaudio_jax.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"do not match the model built from the manifest's config\n  .*shape mis"):
        load_vae(path)


def test_a_swapped_bundle_part_is_refused(parts, tmp_path):
    root, bundle = parts
    path = _stored(parts, tmp_path)
    other = VAE(bundle.vae.module, jax.tree_util.tree_map(lambda x: np.asarray(x) * 1.5, bundle.vae.params),
                bundle.vae.config)
    save_vae(path / "vae", other, overwrite=True)
    with pytest.raises(StoreError, match=r"vae: its weights hash differs from the one .* recorded for 'vae'"):
        load_text_to_audio(path)


def test_writes_are_all_or_nothing(parts, tmp_path):
    _, bundle = parts
    save_vae(tmp_path / "vae", bundle.vae)
    with pytest.raises(StoreError, match="already holds a stored model"):
        save_vae(tmp_path / "vae", bundle.vae)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(StoreError, match="exists and is not a stored model"):
        save_vae(tmp_path / "notes", bundle.vae)
    broken = VAE(bundle.vae.module, {"params": {"x": np.array(["not a number"])}}, bundle.vae.config)
    with pytest.raises(ValueError, match="only numeric arrays can be stored"):
        save_vae(tmp_path / "vae", broken, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "vae"]  # no half-written directory left
    _equal(load_vae(tmp_path / "vae").params, bundle.vae.params)  # the old model is intact


def test_bundle_parts_must_fit_each_other(parts):
    _, bundle = parts
    config = resolve_conditioning(load_config("configs/dit.py:tiny"), 48, 8)
    model = diffusion_model_from_config(config)
    wide = diffusion_model(config, jax.tree_util.tree_map(np.asarray, _init(model, config)))
    with pytest.raises(StoreError, match=r"gives 32-wide features but the diffusion model reads 48-wide"):
        TextToAudioModel(bundle.text, wide, bundle.vae, _bundle_config())


def test_content_hash_depends_on_every_value_name_and_dtype():
    a = {"p": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    assert weights_sha256(a) == weights_sha256({"p": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}})
    assert weights_sha256(a) != weights_sha256({"p": {"w": np.arange(6, dtype=np.float32).reshape(3, 2)}})
    assert weights_sha256(a) != weights_sha256({"q": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}})
    assert weights_sha256(a) != weights_sha256({"p": {"w": np.arange(6, dtype=np.float64).reshape(2, 3)}})
