"""A stable-audio-tools checkpoint of the Stable Audio 2.0 layout (CLAP + DiT + Oobleck VAE), with random weights
under the reference's key names (the real one is not public): the CLAP text branch fine-tuned inside the checkpoint
(``finetune: true``), layer -2 features, cond_dim equal to CLAP's width (no proj_out). `convert` → `generate`."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import (build_tiny_sao_diffusers, diffusers_dit_forward, finetuned_clap_state, roberta_vocab,
                     sat_model_config, write_sat_checkpoint)

from stableaudio_jax.cli import main
from stableaudio_jax.store import load_diffusion, load_vae, read_info

pytestmark = pytest.mark.parity


COND = 128  # CLAP width = cond_dim: 2 heads of 64


@pytest.mark.parametrize("finetune", [True, False])
def test_a_stable_audio_2_layout_converts_and_generates(tmp_path, finetune, capsys):
    """``finetune: true`` models carry CLAP's weights; the others read LAION's checkpoint given as ``--clap``."""
    parts = build_tiny_sao_diffusers(tmp_path / "diffusers", COND, 32, ["a dog barking"])
    clap = finetuned_clap_state(COND)
    write_sat_checkpoint(parts, tmp_path / "model.safetensors", extra=clap if finetune else None)
    config = sat_model_config(COND)
    config["model"]["conditioning"]["configs"][0] = {"id": "prompt", "type": "clap_text", "config": {
        "audio_model_type": "HTSAT-base", "enable_fusion": True, "use_text_features": True, "feature_layer_ix": -2,
        "finetune": finetune, "clap_ckpt_path": "630k-audioset-best.pt"}}
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    vocab = roberta_vocab(tmp_path / "roberta")
    out = tmp_path / "sa2"
    convert = ["convert", "--from", "stable-audio-tools", "--checkpoint", str(tmp_path / "model.safetensors"),
               "--model-config", str(tmp_path / "model_config.json"), "--clap-tokenizer", str(vocab),
               "--out", str(out)]
    if not finetune:  # LAION's own layout: module.text_branch.* / module.text_projection.*, in a torch pickle
        assert main(convert) == 2 and "does not carry CLAP's weights: give the CLAP checkpoint (--clap)" in \
            capsys.readouterr().err
        laion = {k.replace("conditioner.conditioners.prompt.model.model.", "module."): torch.from_numpy(v)
                 for k, v in clap.items()}
        torch.save({"epoch": 45, "state_dict": laion}, tmp_path / "630k-audioset-best.pt")
        convert += ["--clap", str(tmp_path / "630k-audioset-best.pt")]
    assert main(convert) == 0
    text = read_info(out / "text_encoder")
    assert text.config.type == "clap" and text.config.layer == -2 and text.config.output == "features"
    diffusion = load_diffusion(out)
    assert diffusion.config.conditioning.text.type == "clap" and diffusion.config.conditioning.text.max_length == 77
    assert not diffusion.model.zero_padded_text  # CLAP features reach the DiT as the reference passes them
    _matches_the_reference_modules(diffusion, load_vae(out / "vae"), parts)
    wav = tmp_path / "gen.wav"
    assert main(["generate", "rain on a tin roof", "--checkpoint", str(out), "--out", str(wav), "--steps", "3",
                 "--seconds", "0.01", "--no-progress"]) == 0
    audio, rate = sf.read(wav)
    assert rate == 44100 and audio.shape == (441, 2) and np.isfinite(audio).all()


def _matches_the_reference_modules(diffusion, vae, parts):
    """The converted DiT and VAE compute what the reference modules they were written from compute (diffusers'
    StableAudioDiTModel and AutoencoderOobleck, which match stable-audio-tools'), on the same random weights."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 8)).astype(np.float32)
    t = np.array([0.2, 0.8], np.float32)
    cross = rng.standard_normal((2, 79, COND)).astype(np.float32)  # 77 CLAP features + 2 timing tokens
    g = rng.standard_normal((2, 2 * COND)).astype(np.float32)
    ours = diffusion.model.denoiser.apply(diffusion.params["denoiser"], x, t, cross_attn_cond=cross, global_cond=g)
    want = diffusers_dit_forward(parts["transformer"], x, t, cross, g)
    assert np.abs(want).max() > 0.1 and np.abs(np.asarray(ours) - want).max() <= 1e-4
    decoded = vae.module.apply(vae.params, x, method=type(vae.module).decode)
    with torch.no_grad():
        want = parts["vae"].decode(torch.from_numpy(x.transpose(0, 2, 1).copy())).sample.numpy().transpose(0, 2, 1)
    assert np.abs(want).max() > 1e-3 and np.abs(np.asarray(decoded) - want).max() <= 1e-4
