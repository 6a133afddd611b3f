"""Writes tests/data/same_reference.npz: Stable Audio 3's SAME autoencoder pieces from the reference code, on two
small random configurations shaped like SAME-S (chunked attention with the midpoint shift, a kernel-3 decoder
mapping) and SAME-L (sliding-window attention, sinusoidal decoder blocks), with their inputs and outputs.

  git clone https://github.com/Stability-AI/stable-audio-3 /tmp/sa3   # (or any checkout of it)
  python benchmarks/make_same_reference.py --reference /tmp/sa3 --out tests/data/same_reference.npz

The reference's modules are imported from the checkout as benchmarks/sa3_reference.py does. Every parameter is drawn at random (the reference initialises the branch
outputs to zero, which would hide the blocks). The reference's inference-time noise (decoder mask noise, the
bottleneck's noise regularisation) is off, so the outputs are deterministic.
"""
from __future__ import annotations

import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sa3_reference import fixture_arguments, import_reference, write_fixture  # noqa: E402

CONFIGS = {
    # SAME-S shaped (width 24 = 3 heads of 8): chunks of 8 patches = 2 latents at stride 4, the midpoint shift in
    # the second half of the blocks
    "s": dict(patch_size=8, channels=4, c_mults=[6], strides=[4], transformer_depths=[2], latent_dim=8, dim_heads=8,
              chunk_size=8, chunk_midpoint_shift=True, encoder=dict(conv_mapping=False),
              decoder=dict(conv_mapping=True, sinusoidal_blocks=[0])),
    # SAME-L shaped: a band of one latent's tokens either side, the decoder's last blocks sinusoidal
    "l": dict(patch_size=8, channels=4, c_mults=[6], strides=[4], transformer_depths=[3], latent_dim=8, dim_heads=8,
              sliding_window=[1, 1], encoder=dict(conv_mapping=False),
              decoder=dict(conv_mapping=False, sinusoidal_blocks=[3])),
}
SAMPLES = 8 * 4 * 5 + 3  # 5 latents and a bit: the encoder pads to whole patches and chunks


def build(reference, config: dict, torch):
    autoencoders, bottleneck, pretransforms = reference
    common = {k: config[k] for k in ("channels", "c_mults", "strides", "transformer_depths", "latent_dim",
                                     "dim_heads")}
    common.update({k: config[k] for k in ("chunk_size", "chunk_midpoint_shift", "sliding_window") if k in config})
    encoder = autoencoders.SAMEEncoder(in_channels=2 * config["patch_size"], variable_stride=True,
                                       **common, **config["encoder"])
    decoder = autoencoders.SAMEDecoder(out_channels=2 * config["patch_size"], variable_stride=True,
                                       **common, **config["decoder"])
    soft_norm = bottleneck.SoftNormBottleneck(dim=config["latent_dim"], noise_regularize=False, auto_scale=True)
    patcher = pretransforms.PatchedPretransform(channels=2, patch_size=config["patch_size"])
    generator = torch.Generator().manual_seed(0)
    for module in (encoder, decoder, soft_norm):
        for name, p in module.named_parameters():
            with torch.no_grad():
                if name.endswith("running_std"):
                    p.fill_(1.7)
                elif name.endswith("alpha"):
                    p.copy_(0.5 + torch.rand(p.shape, generator=generator))
                elif p.numel():
                    p.copy_(torch.randn(p.shape, generator=generator) * (0.3 if p.ndim > 1 else 0.5))
    return encoder.eval(), decoder.eval(), soft_norm.eval(), patcher


def main(argv=None) -> int:
    args = fixture_arguments(__doc__, "tests/data/same_reference.npz", argv)
    import torch
    reference = import_reference(args.reference, "models.autoencoders", "models.bottleneck", "models.pretransforms")
    arrays = {}
    for name, config in CONFIGS.items():
        encoder, decoder, soft_norm, patcher = build(reference, config, torch)
        audio = torch.randn(1, 2, SAMPLES, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            latents = soft_norm.encode(encoder(patcher.encode(audio)))
            decoded = patcher.decode(decoder(soft_norm.decode(latents)))
        arrays[f"{name}/audio"] = audio.numpy()
        arrays[f"{name}/latents"] = latents.numpy()
        arrays[f"{name}/decoded"] = decoded.numpy()
        for prefix, module in (("encoder", encoder), ("decoder", decoder), ("bottleneck", soft_norm)):
            for key, value in module.state_dict().items():
                if not key.endswith("inv_freq"):
                    arrays[f"{name}/state/{prefix}.{key}"] = value.numpy()
    write_fixture(args, arrays, {"configs": CONFIGS, "samples": SAMPLES})
    return 0


if __name__ == "__main__":
    sys.exit(main())
