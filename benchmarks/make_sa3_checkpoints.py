"""Writes tiny Stable Audio 3 checkpoints in the published layout (``model_config.json`` + ``model.safetensors``)
from the reference code with random weights, for the converter's tests (tests/data/sa3_tiny/):

  small/   the Small models' layout: plain attention, a SAME-S-shaped autoencoder (chunked attention with the
           midpoint shift, kernel-3 decoder mapping), post-trained objective (rf_denoiser)
  medium/  the Medium model's layout: differential attention, a SAME-L-shaped autoencoder (sliding window,
           sinusoidal decoder blocks), a "-base" objective (rectified_flow)
  same/    a standalone autoencoder repository's layout (SAME-L shaped: the encoder/decoder at the config's top)
  loras/   adapter files for small/ written by the reference's LoRA code (lora, dora-rows, dora-cols, bora,
           lora-xs, dora-rows-xs; rank 2, alpha 3, on a few DiT and conditioner layers, random values), and
           baked.npz: the weights the reference's parametrisations give at strength 0.7, each file alone and
           lora then dora-cols chained

  git clone https://github.com/Stability-AI/stable-audio-3 /tmp/sa3
  python benchmarks/make_sa3_checkpoints.py --reference /tmp/sa3 --out tests/data/sa3_tiny

Each checkpoint is built by the reference's own factory (``create_diffusion_cond_from_config`` /
``create_autoencoder_from_config``) from the config written beside it, so the configs are ones the reference reads.
One stand-in: the prompt conditioner. The reference's ``T5GemmaConditioner`` loads T5Gemma through ``transformers``
and is 768 wide; at toy width (16) the stand-in is its base class with the same learned padding embedding, which is
all of it the checkpoint holds (T5Gemma's weights are not in SA3 checkpoints).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sa3_reference import fixture_arguments, import_reference, reference_commit  # noqa: E402

SAMPLE_RATE, PATCH, STRIDE, LATENT, WIDTH = 2000, 8, 4, 8, 16


def autoencoder_config(shape: str) -> dict:
    common = dict(channels=4, c_mults=[6], strides=[STRIDE], transformer_depths=[2], latent_dim=LATENT, dim_heads=8,
                  variable_stride=True)
    attention = (dict(chunk_size=8, chunk_midpoint_shift=True) if shape == "s" else dict(sliding_window=[1, 1]))
    decoder = (dict(conv_mapping=True, mask_noise=0.01, sinusoidal_blocks=[0]) if shape == "s"
               else dict(conv_mapping=False, mask_noise=0.01, sinusoidal_blocks=[2]))
    return {"encoder": {"type": "same", "config": dict(common, in_channels=2 * PATCH, conv_mapping=False,
                                                       **attention)},
            "decoder": {"type": "same", "config": dict(common, out_channels=2 * PATCH, **decoder, **attention)},
            "bottleneck": {"type": "softnorm", "config": {"dim": LATENT, "noise_regularize": True,
                                                          "auto_scale": True}},
            "pretransform": {"type": "patched", "config": {"channels": 2, "patch_size": PATCH}},
            "latent_dim": LATENT, "downsampling_ratio": PATCH * STRIDE, "io_channels": 2}


def model_config(layout: str) -> dict:
    differential = layout == "medium"
    dit = dict(io_channels=LATENT, embed_dim=32, depth=2, num_heads=1, cond_token_dim=WIDTH, global_cond_dim=WIDTH,
               project_cond_tokens=True, global_cond_type="adaLN", timestep_features_type="expo",
               timestep_features_dim=256, num_memory_tokens=4, local_add_cond_dim=LATENT + 1, norm_type="rms_norm",
               attn_kwargs={"qk_norm": "rms", "differential": differential}, ff_kwargs={"mult": 2})
    return {"model_type": "diffusion_cond", "sample_rate": SAMPLE_RATE, "sample_size": 64 * PATCH * STRIDE,
            "audio_channels": 2,
            "model": {"io_channels": LATENT,
                      "pretransform": {"type": "autoencoder", "chunked": True,
                                       "config": autoencoder_config("l" if differential else "s")},
                      "conditioning": {"cond_dim": WIDTH, "configs": [
                          {"id": "prompt", "type": "t5gemma",
                           "config": {"model_name": "google/t5gemma-b-b-ul2", "max_length": 12,
                                      "padding_mode": "learned"}},
                          {"id": "seconds_total", "type": "number",
                           "config": {"min_val": 0, "max_val": 384, "fourier_features_type": "expo"}}]},
                      "diffusion": {"type": "dit",
                                    "diffusion_objective": "rectified_flow" if differential else "rf_denoiser",
                                    "cross_attention_cond_ids": ["prompt", "seconds_total"],
                                    "global_cond_ids": ["seconds_total"],
                                    "local_add_cond_ids": ["inpaint_mask", "inpaint_masked_input"],
                                    "mask_padding_attention": True, "use_effective_length_for_schedule": True,
                                    "config": dit}}}


def randomise(module, torch, seed: int) -> None:
    """Every float tensor random (the reference zero-initialises branch outputs); positive where it must be."""
    generator = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        with torch.no_grad():
            if name.endswith(("running_std", "alpha", "weight_g")):
                p.copy_(0.5 + torch.rand(p.shape, generator=generator))
            elif p.numel():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)


def save(directory: str, config: dict, module) -> None:
    from safetensors.torch import save_file
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "model_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    save_file(state, os.path.join(directory, "model.safetensors"))
    print(f"wrote {directory}: {len(state)} tensors, {sum(v.numel() for v in state.values())} values")


ADAPTERS = ("lora", "dora-rows", "dora-cols", "bora", "lora-xs", "dora-rows-xs")
LORA_INCLUDE = ["transformer.layers.1.self_attn", "to_global_embed", "preprocess_conv", "embedder.embedding"]
CHAINS = {kind: [kind] for kind in ADAPTERS} | {"lora+dora-cols": ["lora", "dora-cols"]}
STRENGTH = 0.7


def write_adapters(factory, lora, torch, out: str) -> dict:
    """One adapter file per type on small/'s model (random adapter values), and the reference's baked weights."""
    from functools import partial
    os.makedirs(out, exist_ok=True)
    for seed, kind in enumerate(ADAPTERS):
        model = small_model(factory, torch)
        config = {torch.nn.Linear: {"weight": partial(lora.LoRAParametrization.from_linear, rank=2, lora_alpha=3,
                                                      adapter_type=kind)},
                  torch.nn.Conv1d: {"weight": partial(lora.LoRAParametrization.from_conv1d, rank=2, lora_alpha=3,
                                                      adapter_type=kind)}}
        for part in (model.model, model.conditioner):
            lora.add_lora(part, config, include=LORA_INCLUDE)
        generator = torch.Generator().manual_seed(100 + seed)
        state = {}
        for part in (model.model, model.conditioner):
            for name, p in lora.get_lora_state_dict(part).items():
                scale = 1.0 if "magnitude" in name else 0.5
                with torch.no_grad():
                    value = torch.randn(p.shape, generator=generator) * scale
                    state[name] = value.abs() + 0.5 if "magnitude" in name else value
        lora.save_lora_safetensors(state, {"rank": 2, "alpha": 3, "adapter_type": kind, "include": LORA_INCLUDE},
                                   os.path.join(out, f"{kind}.safetensors"))
    baked = {}
    for name, kinds in CHAINS.items():
        model = small_model(factory, torch)
        loader = sys.modules["stable_audio_3.models.lora.loader"]
        loader.load_and_apply_loras(model, [os.path.join(out, f"{k}.safetensors") for k in kinds], "diffusion_cond")
        for part in (model.model, model.conditioner):
            lora.set_lora_strength(part, STRENGTH)
        for part, prefix in ((model.model, ""), (model.conditioner, "conditioner.")):
            for module_name, module in part.named_modules():
                if hasattr(module, "parametrizations"):
                    baked[f"{name}/{prefix}{module_name}"] = module.weight.detach().reshape(
                        module.weight.shape[0], -1).numpy()
    np.savez_compressed(os.path.join(out, "baked.npz"), **baked)
    print(f"wrote {out}: {len(ADAPTERS)} adapter files, {len(baked)} baked weights")
    return baked


def small_model(factory, torch):
    model = factory.create_diffusion_cond_from_config(model_config("small"))
    randomise(model, torch, 0)
    return model


def main(argv=None) -> int:
    args = fixture_arguments(__doc__, "tests/data/sa3_tiny", argv)
    import torch
    factory, conditioners, lora, _ = import_reference(args.reference, "factory", "models.conditioners", "models.lora",
                                                      "models.lora.loader")

    class StandInT5Gemma(conditioners.Conditioner):  # see the module docstring
        def __init__(self, output_dim, model_name="google/t5gemma-b-b-ul2", max_length=128, padding_mode="zero",
                     project_out=False, **_):
            super().__init__(output_dim, output_dim, project_out=project_out, padding_mode=padding_mode)

    factory.T5GemmaConditioner = StandInT5Gemma
    for seed, layout in enumerate(("small", "medium")):
        config = model_config(layout)
        model = factory.create_diffusion_cond_from_config(config)
        randomise(model, torch, seed)
        save(os.path.join(args.out, layout), config, model)
    config = {"model_type": "autoencoder", "sample_rate": SAMPLE_RATE, "audio_channels": 2,
              "model": autoencoder_config("l")}
    autoencoder = factory.create_autoencoder_from_config(config["model"], SAMPLE_RATE)
    randomise(autoencoder, torch, 7)
    save(os.path.join(args.out, "same"), config, autoencoder)
    write_adapters(factory, lora, torch, os.path.join(args.out, "loras"))
    commit = reference_commit(args.reference, args.reference_commit)
    with open(os.path.join(args.out, "made_by.json"), "w", encoding="utf-8") as f:
        json.dump({"script": "benchmarks/make_sa3_checkpoints.py", "reference_commit": commit,
                   "torch": torch.__version__}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
