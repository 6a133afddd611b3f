"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""
import json
import os
import re

import jax
import numpy as np
import soundfile as sf

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.data.latent_records import LatentRecord, write_manifest
from stableaudio_jax.data.tfrecord import TFRecordWriter
from stableaudio_jax.training.checkpoints import TrainCheckpointer


def randomize_snake(params, scale=0.3, seed=0):
    """Non-zero SnakeBeta alpha/beta (they initialise to 0, which would hide layout errors)."""
    rng = np.random.default_rng(seed)

    def f(path, x):
        name = str(path[-1])
        if "alpha" in name or "beta" in name:
            return x + scale * rng.standard_normal(x.shape).astype(np.asarray(x).dtype)
        return x

    return jax.tree_util.tree_map_with_path(f, params)


# A small diffusers StableAudioDiTModel that keeps SAO's structure: grouped-query cross-attention (4 query heads,
# 2 key/value heads) and partial rotary (32 of 64 head dims).
TINY_DIFFUSERS_DIT = dict(sample_size=32, in_channels=8, num_layers=2, attention_head_dim=64, num_attention_heads=4,
                          num_key_value_attention_heads=2, out_channels=8, cross_attention_dim=128, time_proj_dim=32,
                          global_states_input_dim=96, cross_attention_input_dim=48)


def randomized_diffusers_dit(seed=0, zero_norm_bias=True, **overrides):
    """Every parameter randomised (the zero-initialised output projections and 1x1 convs too)."""
    import torch
    from diffusers import StableAudioDiTModel
    torch.manual_seed(seed)
    model = StableAudioDiTModel(**dict(TINY_DIFFUSERS_DIT, **overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(0.5 * torch.randn_like(p) / p.shape[-1] ** 0.5)
            elif name.endswith("norm1.bias") or name.endswith("norm2.bias") or name.endswith("norm3.bias"):
                p.copy_(torch.zeros_like(p) if zero_norm_bias else 0.1 * torch.randn_like(p))
            elif "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def diffusers_dit_forward(model, x_btc, t, cross, global_cond):
    """Runs diffusers' DiT on channels-last numpy inputs with the pipeline's rotary table; channels-last output."""
    import torch
    from diffusers.models.embeddings import get_1d_rotary_pos_embed
    head_dim = model.config.attention_head_dim
    rotary = get_1d_rotary_pos_embed(head_dim // 2, x_btc.shape[1] + 1, use_real=True, repeat_interleave_real=False)
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x_btc.transpose(0, 2, 1))), torch.from_numpy(t),
                    encoder_hidden_states=torch.from_numpy(cross),
                    global_hidden_states=torch.from_numpy(np.array(global_cond[:, None])), rotary_embedding=rotary,
                    return_dict=False)[0]
    return out.numpy().transpose(0, 2, 1)


def dit_inputs(batch=2, frames=20, tokens=7, seed=0):
    rng = np.random.default_rng(seed)
    cfg = TINY_DIFFUSERS_DIT
    return (rng.standard_normal((batch, frames, cfg["in_channels"])).astype(np.float32),
            rng.uniform(0, 1, batch).astype(np.float32),
            rng.standard_normal((batch, tokens, cfg["cross_attention_input_dim"])).astype(np.float32),
            rng.standard_normal((batch, cfg["global_states_input_dim"])).astype(np.float32))


# ---- stable-audio-tools names for diffusers state dicts (diffusers' conversion script, reversed; written
# independently of the project's converters so that a mapping error in either shows up)


def vae_key_to_sat(key: str, n: int) -> str:
    """stable-audio-tools names for diffusers' AutoencoderOobleck keys (diffusers' conversion script, reversed)."""
    res = {"snake1": "0", "conv1": "1", "snake2": "2", "conv2": "3"}
    m = re.match(r"(encoder|decoder)\.(conv1|snake1|conv2)\.(.+)", key)
    if m:
        index = {"conv1": 0, "snake1": n + 1, "conv2": n + 2}[m.group(2)]
        return f"{m.group(1)}.layers.{index}.{m.group(3)}"
    coder, block, rest = re.match(r"(encoder|decoder)\.block\.(\d+)\.(.+)", key).groups()
    head = f"{coder}.layers.{int(block) + 1}.layers"
    m = re.match(r"res_unit(\d)\.(snake1|conv1|snake2|conv2)\.(.+)", rest)
    if m:
        offset = -1 if coder == "encoder" else 1
        return f"{head}.{int(m.group(1)) + offset}.layers.{res[m.group(2)]}.{m.group(3)}"
    layer, leaf = rest.split(".", 1)
    index = {"encoder": {"snake1": 3, "conv1": 4}, "decoder": {"snake1": 0, "conv_t1": 1}}[coder][layer]
    return f"{head}.{index}.{leaf}"


def dit_state_to_sat(state, num_layers=TINY_DIFFUSERS_DIT["num_layers"], rotary_dim=32):
    """stable-audio-tools names for a diffusers DiT state dict (diffusers' conversion script, reversed)."""
    out = {}
    for key, value in state.items():
        k = key
        for a, b in [("cross_attention_proj", "to_cond_embed"), ("global_proj", "to_global_embed"),
                     ("timestep_proj", "to_timestep_embed"), ("time_proj.weight", "timestep_features.weight"),
                     ("proj_in", "transformer.project_in"), ("proj_out", "transformer.project_out"),
                     ("transformer_blocks", "transformer.layers"), ("norm1", "pre_norm"),
                     ("norm2", "cross_attend_norm"), ("norm3", "ff_norm"), ("attn1", "self_attn"),
                     ("attn2", "cross_attn"), ("to_out.0", "to_out"), ("ff.net", "ff.ff")]:
            k = k.replace(a, b)
        k = re.sub(r"norm\.weight$", "norm.gamma", re.sub(r"norm\.bias$", "norm.beta", k))
        out[k] = value[:, None] if k == "timestep_features.weight" else value
    for i in range(num_layers):
        p = f"transformer.layers.{i}"
        out[f"{p}.self_attn.to_qkv.weight"] = np.concatenate(
            [out.pop(f"{p}.self_attn.to_{c}.weight") for c in "qkv"])
        out[f"{p}.cross_attn.to_kv.weight"] = np.concatenate([out.pop(f"{p}.cross_attn.to_{c}.weight") for c in "kv"])
    exponents = np.arange(0, rotary_dim, 2, dtype=np.float32) / rotary_dim
    out["transformer.rotary_pos_emb.inv_freq"] = 1.0 / 10000 ** exponents
    return out


def timing_state_to_sat(state):
    """stable-audio-tools names for the projection model's tensors (prefix stripped): timing, and the text
    projection (``text_projection`` → the prompt conditioner's ``proj_out``)."""
    rename = {"start_number_conditioner": "seconds_start", "end_number_conditioner": "seconds_total"}
    out = {}
    for key, value in state.items():
        head, rest = key.split(".", 1)
        if head == "text_projection":
            out[f"prompt.proj_out.{rest}"] = value
            continue
        out[f"{rename[head]}.{rest.replace('time_positional_embedding', 'embedder.embedding')}"] = value
    return out


def synthetic_state_dict(shapes, seed=0):
    """Deterministic random weights for a PyTorch state dict given {name: shape}: matrices/convs N(0, 1/fan_in),
    1-D ``weight`` (norm gains) 1 + 0.1 N, Fourier ``weights`` N(0, 1), biases 0.1 N. Keys are visited sorted, so
    the same shapes always give the same tensors (reference fixtures are produced with this function)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(shapes):
        shape = tuple(int(s) for s in shapes[name])
        z = rng.standard_normal(shape)
        if name.endswith(".weights"):
            w = z
        elif len(shape) >= 2:
            w = z / np.sqrt(np.prod(shape) / shape[0])
        elif name.endswith(".weight"):
            w = 1.0 + 0.1 * z
        else:
            w = 0.1 * z
        out[name] = w.astype(np.float32)
    return out


def build_tiny_sao_diffusers(root, cond_dim=32, frames=32, captions=("a dog barking",), text_dim=None):
    """A Stable Audio Open shaped diffusers folder with random tiny modules (vae/, transformer/, text_encoder/,
    projection_model/, tokenizer/spiece.model) under ``root``; returns the torch modules. ``text_dim`` (default
    ``cond_dim``): the T5 width; when it differs the projection model holds a text projection."""
    text_dim = text_dim or cond_dim
    import torch
    from diffusers import AutoencoderOobleck
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel
    from transformers import T5Config, T5EncoderModel

    from stableaudio_jax.store.tokenizers import train_sentencepiece
    torch.manual_seed(0)
    vae = AutoencoderOobleck(encoder_hidden_size=16, downsampling_ratios=[2, 4, 2], channel_multiples=[1, 2, 2],
                             decoder_channels=16, decoder_input_channels=8, audio_channels=2).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.copy_(0.3 * torch.randn_like(p))
    dit = randomized_diffusers_dit(seed=2, sample_size=frames, cross_attention_input_dim=cond_dim,
                                   global_states_input_dim=2 * cond_dim, time_proj_dim=256)
    text_encoder = T5EncoderModel(T5Config(vocab_size=160, d_model=text_dim, d_kv=8, d_ff=48, num_layers=2,
                                           num_heads=4)).eval()
    projection = StableAudioProjectionModel(text_encoder_dim=text_dim, conditioning_dim=cond_dim, min_value=0,
                                            max_value=512)
    with torch.no_grad():
        for p in projection.parameters():
            p.add_(0.2 * torch.randn_like(p))
    parts = dict(vae=vae, transformer=dit, text_encoder=text_encoder, projection_model=projection)
    for name, module in parts.items():
        module.save_pretrained(root / name)
    train_sentencepiece(list(captions) * 20 + ["rain on a tin roof", "a crowd cheering"] * 10,
                        root / "tokenizer" / "spiece.model", vocab_size=150)
    return parts


def sat_model_config(cond):
    oobleck = dict(channels=16, c_mults=[1, 2, 2], strides=[2, 4, 2], use_snake=True)
    return {"model_type": "diffusion_cond", "sample_size": 16 * 32, "sample_rate": 44100, "audio_channels": 2,
            "model": {
                "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": {
                    "encoder": {"type": "oobleck", "config": dict(oobleck, in_channels=2, latent_dim=16)},
                    "decoder": {"type": "oobleck", "config": dict(oobleck, out_channels=2, latent_dim=8,
                                                                  final_tanh=False)},
                    "bottleneck": {"type": "vae"}, "latent_dim": 8, "downsampling_ratio": 16, "io_channels": 2}},
                "conditioning": {"cond_dim": cond, "configs": [
                    {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 128}},
                    {"id": "seconds_start", "type": "number", "config": {"min_val": 0, "max_val": 512}},
                    {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 512}}]},
                "diffusion": {"cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                              "global_cond_ids": ["seconds_start", "seconds_total"], "type": "dit", "config": {
                                  "io_channels": 8, "embed_dim": 256, "depth": 2, "num_heads": 4,
                                  "cond_token_dim": cond, "global_cond_dim": 2 * cond, "project_cond_tokens": False,
                                  "transformer_type": "continuous_transformer"}},
                "io_channels": 8}}


def write_sat_checkpoint(parts, path, extra=None):
    """stable-audio-tools layout of diffusers parts: pretransform.model.* / model.model.* / conditioner.*"""
    from safetensors.numpy import save_file
    vae, dit, projection = parts["vae"], parts["transformer"], parts["projection_model"]
    state = {}
    for key, value in vae.state_dict().items():
        value = value.numpy().reshape(-1) if key.endswith(("alpha", "beta")) else value.numpy()
        state["pretransform.model." + vae_key_to_sat(key, 3)] = np.ascontiguousarray(value)
    for key, value in dit_state_to_sat({k: v.numpy() for k, v in dit.state_dict().items()}).items():
        state["model.model." + key] = value
    for key, value in timing_state_to_sat({k: v.numpy() for k, v in projection.state_dict().items()}).items():
        state["conditioner.conditioners." + key] = value
    state.update(extra or {})
    save_file(state, str(path))
    return path


def model_config(spec, overrides=()):
    """A denoiser config's ``model`` section with its conditioning widths derived (as the trainer builds it)."""
    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.store import resolve_conditioning
    return resolve_conditioning(load_config(spec, overrides)).model


class FlakyScoreParse:
    """A demo-data score parser (picklable, for the worker processes) that fails on one piece and hangs on
    another, and parses the rest for real."""

    def __init__(self, bad: str, slow: str, sleep: float = 30.0):
        self.bad, self.slow, self.sleep = bad, slow, sleep

    def __call__(self, piece):
        import time

        from stableaudio_jax.data.demo_music import parse_notes
        if piece.path == self.bad:
            raise ValueError("no notes")
        if piece.path == self.slow:
            time.sleep(self.sleep)
        return parse_notes(piece)


def roberta_vocab(root):
    """A byte-level BPE vocabulary in roberta-base's file layout (vocab.json + merges.txt; <s>=0, <pad>=1, </s>=2)
    under ``root``: CLAP's tokenizer files, made here because roberta-base's own are not downloadable offline."""
    from tokenizers import ByteLevelBPETokenizer
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(["a dog barking", "rain on a tin roof"] * 10, vocab_size=300, min_frequency=1,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    root.mkdir()
    trainer.save_model(str(root))
    return root


def finetuned_clap_state(width, layers=2, intermediate=256, seed=3):
    """``conditioner.conditioners.prompt.model.model.{text_branch, text_projection}.*`` of a random tiny CLAP text
    branch (``width`` = its hidden size, 2 heads): what a ``finetune: true`` stable-audio-tools checkpoint carries."""
    import torch
    from transformers import RobertaConfig, RobertaModel
    torch.manual_seed(seed)
    branch = RobertaModel(RobertaConfig(vocab_size=320, hidden_size=width, num_hidden_layers=layers,
                                        num_attention_heads=2, intermediate_size=intermediate,
                                        max_position_embeddings=90, type_vocab_size=1, pad_token_id=1,
                                        layer_norm_eps=1e-5))
    projection = torch.nn.Sequential(torch.nn.Linear(width, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64))
    prefix = "conditioner.conditioners.prompt.model.model."
    state = {f"{prefix}text_branch.{k}": v.numpy() for k, v in branch.state_dict().items()}
    return state | {f"{prefix}text_projection.{k}": v.numpy() for k, v in projection.state_dict().items()}


def assert_interleaved_pairs(timing, pairs):
    """A benchmark's interleaved-pairs record (benchmarks/common.py) keeps every pair, and its summary is what the
    pairs say: each ratio is reference / ours, the summary's median and range are the pairs' own."""
    import statistics
    rows = timing["pairs"]
    assert len(rows) == pairs == timing["summary"]["n_pairs"], (len(rows), pairs, timing["summary"])
    for row in rows:
        assert row["ours_s"] > 0 and row["reference_s"] > 0
        assert np.isclose(row["ratio"], row["reference_s"] / row["ours_s"])
    for key, values in (("ratio", [r["ratio"] for r in rows]), ("ours_s", [r["ours_s"] for r in rows]),
                        ("reference_s", [r["reference_s"] for r in rows])):
        summary = timing["summary"][key]
        assert np.isclose(summary["median"], statistics.median(values)), (key, summary, values)
        assert summary["min"] == min(values) and summary["max"] == max(values), (key, summary, values)
    cpu = [r["reference_cpu_s"] / max(r["ours_cpu_s"], 1e-9) for r in rows]
    assert np.isclose(timing["summary"]["cpu_ratio"]["median"], statistics.median(cpu))


# Training data and run state shared by the training tests

TEXT_LENGTH, TEXT_DIM, FRAMES = 24, 32, 128  # as tests/test_round_trip.py: the compiled DiT step is shared


def write_latents(directory, files=4, per_file=8, channels=4, text="embeddings", text_dim=TEXT_DIM):
    """Latent 'songs': a few sinusoids per file (their frequency set by the file), captions per file."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    shards = []
    for f in range(files):
        name = f"latents-{f:05d}-of-{files:05d}.tfrecord"
        with TFRecordWriter(os.path.join(directory, name)) as writer:
            for w in range(per_file):
                t = np.arange(w * FRAMES, (w + 1) * FRAMES)[:, None]
                latents = np.sin(2 * np.pi * t * (f + 1) / 32 + np.arange(channels)) + 0.1 * rng.standard_normal(
                    (FRAMES, channels))
                text_kw = (dict(text_embeddings=np.full((TEXT_LENGTH, text_dim), f / files, np.float16))
                           if text == "embeddings" else dict(text_ids=np.full(TEXT_LENGTH, f + 3)))
                record = LatentRecord(latents=latents.astype(np.float32), latent_length=FRAMES,
                                      seconds_start=w * FRAMES * 8 / 44100, seconds_total=per_file * FRAMES * 8 / 44100,
                                      text_mask=np.arange(TEXT_LENGTH) < 4, caption=f"song {f}", source_id=f"{f}.wav",
                                      window_index=w, **text_kw)
                writer.write(record.to_bytes())
        shards.append({"file": name, "records": per_file})
    write_manifest(directory, {
        "format": "stableaudio-jax/latents", "version": 1, "encoder_config_hash": "0123456789abcdef",
        "latent_channels": channels, "latent_frames": FRAMES, "sample_rate": 44100, "downsampling_ratio": 8,
        "text": text, "text_length": TEXT_LENGTH, "text_dim": text_dim if text == "embeddings" else None,
        "shards": shards, "records": files * per_file,
        "encoder_config": {"vae": load_config("configs/vae.py:tiny").model.to_dict()}})
    return str(directory)


def restored_state(workdir):
    """The (train state, data position) of a run's latest checkpoint."""
    checkpointer = TrainCheckpointer(workdir, async_save=False)
    try:
        state, data, _ = checkpointer.restore(None)
        return state, data
    finally:
        checkpointer.close()


def write_music_folder(root, count=6, seconds=1.5, seed=0):
    """Short synthetic 'music': decaying harmonic notes over a soft noise bed, mono and stereo, two rates."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rate = (44100, 22050)[i % 2]
        t = np.arange(int(rate * seconds)) / rate
        audio = 0.02 * rng.standard_normal(t.shape)
        for onset in np.arange(0, seconds, 0.25):
            f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
            env = np.where(t >= onset, np.exp(-(t - onset) * 6), 0)
            audio += sum(0.3 / h * np.sin(2 * np.pi * f0 * h * t) for h in (1, 2, 3)) * env
        audio = np.clip(audio, -1, 1).astype(np.float32)
        if i % 3 == 0:
            audio = np.stack([audio, np.roll(audio, 37)], axis=1)
        sf.write(root / f"take_{i}.wav", audio, rate)
    return root


# small spectral-loss and discriminator FFTs for the tiny VAE: the same compiled steps in every test that uses them
SMALL_VAE_LOSSES = ["training.spectral.fft_sizes=(256,)", "training.spectral.hop_sizes=(64,)",
         "training.discriminator.n_ffts=(128,)", "training.discriminator.hops=(32,)"]


def assert_trees_equal(a, b):
    """Bit-equal pytrees (PRNG keys compared by their data)."""
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# The tiny world: one run of the main path that end-to-end tests share: `quickstart --preset ci`
# (configs/quickstart.py), whose sizes these are

TINY_WORLD_RATE = 16000  # mono
TINY_WORLD_LATENT_CHANNELS = 16
# An eps U-Net on the world's latents: the tiny U-Net cut to two levels. tests/test_round_trip.py and
# tests/test_diffusion_training.py train it with these overrides: one compiled step serves both.
TINY_WORLD_UNET = ["training.crop_frames=16", f"model.in_channels={TINY_WORLD_LATENT_CHANNELS}", "model.factors=(1,2)",
                   "model.multipliers=(1,1,1)", "model.num_blocks=(1,1)", "model.attentions=(0,1,1)",
                   "model.channels=32", "diffusion.objective=eps"]


def tiny_world_vae_overrides():
    """The settings the quickstart trains the world's VAE with (``--config.`` overrides of configs/vae.py:tiny,
    without the loop's): a run with them compiles the world's steps again, which the persistent compilation cache
    (tests/conftest.py) already holds."""
    return list(load_config("configs/quickstart.py:ci").vae.overrides)


def tiny_world_captions(world, split="train"):
    """The demo captions of one split of the tiny world's data (``demo_data/captions.jsonl``)."""
    rows = [json.loads(line) for line in (world / "demo_data" / "captions.jsonl").read_text().splitlines()]
    return [row["caption"] for row in rows if row["split"] == split]


def _cli(*args):
    from stableaudio_jax.cli import main
    assert main([str(a) for a in args]) == 0, args


def cli_optimized(*args):
    """The CLI in a subprocess whose XLA optimises what it compiles. tests/conftest.py turns XLA's backend
    optimisation off for the test processes, because compiles dominate most tests; a run of many steps is the
    exception: the tiny DiT's training step on the 8 simulated devices takes 0.24 s optimised and 0.55 s not."""
    import subprocess
    import sys
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_backend_optimization_level")]
    done = subprocess.run([sys.executable, "-m", "stableaudio_jax.cli", *map(str, args)], capture_output=True,
                          text=True, env=dict(os.environ, XLA_FLAGS=" ".join(flags)),
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, (args, done.stderr[-3000:])


def build_tiny_world(root):
    """The product's main path once, as a user runs it (``tests/conftest.py``'s ``tiny_world`` fixture): the README's
    ``quickstart --preset ci`` in ``root`` (demo data → a sentencepiece T5 → ``ingest`` → ``train-vae`` → ``encode``
    → ``train`` a v-DiT for 40 steps, checkpoints every 10 → ``generate`` → ``evaluate``), then that exported
    model fine-tuned for 30 steps as a rectified-flow one (``train --init-from``; optimised XLA, see
    ``cli_optimized``) in ``rf/model``, as SAO is before ARC post-training (tests/test_arc.py)."""
    _cli("quickstart", "--workdir", root, "--preset", "ci", "--no-progress")
    cli_optimized("train", "--config", "configs/dit.py:tiny", "--data", root / "latents", "--workdir", root / "rf",
                  "--init-from", root / "dit" / "model", "--config.diffusion.objective=rectified_flow",
                  "--config.training.steps=30", "--config.training.checkpoint_every=30", "--no-progress")
    return root


def gemma_style_tokenizer(directory, config: dict) -> None:
    """A small tokenizer.json shaped like Gemma's (byte-fallback BPE, spaces as ▁, <pad>=0 <eos>=1 <bos>=2 <unk>=3,
    a post-processor adding <bos> … <eos>) trained here on captions, and a tokenizer_config.json."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    captions = [f"a {mood} piece for piano and flute at {bpm} BPM" for mood in ("slow", "happy", "sad")
                for bpm in range(60, 200, 9)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.train_from_iterator(captions, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"], show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", 2),
                                                                                                     ("<eos>", 1)])
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
        "unk_token": "<unk>", **config}))
