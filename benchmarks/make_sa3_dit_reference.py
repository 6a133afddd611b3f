"""Writes tests/data/sa3_dit_reference.npz: Stable Audio 3's diffusion transformer from the reference code on two
small random configurations (Small's layout, and Medium's with differential attention), with inputs (inpainting
conditioning included) and outputs without a padding mask, with one as the reference's CPU path applies it (values
at padded keys zeroed), and as its flash-attn varlen path does (padded frames removed: each clip run alone on its
valid frames, no mask); and the conditioning pieces (the prompt's learned padding, the seconds_total token) and the sampling time grids.

  git clone https://github.com/Stability-AI/stable-audio-3 /tmp/sa3   # (or any checkout of it)
  python benchmarks/make_sa3_dit_reference.py --reference /tmp/sa3 --out tests/data/sa3_dit_reference.npz

Every parameter is drawn at random (the reference zero-initialises the branch outputs, which would hide the
blocks). One change to the reference: its ``ExpoFourierFeatures`` computes the 128 frequencies in float32, where its
``exp`` is one ulp off the correctly rounded value for a few of them; at frequency 1e4 that moves a feature by up to
~0.05, so the DiT runs here with the correctly rounded frequencies (what stableaudio_jax computes). The unchanged
features are stored too (``expo/*``) for the test that measures that difference.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sa3_reference import fixture_arguments, import_reference, write_fixture  # noqa: E402

# Small's layout on two heads of 32 (the rotary embedding then spans each head: max(32 // 2, 32)); Medium's with
# differential attention on one head of 64 (rotary on its first 32 dims, as the published models' heads)
COMMON = dict(io_channels=8, embed_dim=64, depth=2, cond_token_dim=16, global_cond_dim=16, local_add_cond_dim=9,
              num_memory_tokens=4, ff_mult=2)
CONFIGS = {"small": dict(COMMON, num_heads=2, differential=False),
           "medium": dict(COMMON, num_heads=1, differential=True)}
BATCH, FRAMES, TOKENS, VALID = 2, 12, 5, [12, 7]
SCHEDULES = [(8, 1.0), (50, 1.0), (4, 0.7)]  # (steps, first time): generation, the base models', audio-to-audio


def build(dit, config: dict, torch):
    model = dit.DiffusionTransformer(
        io_channels=config["io_channels"], embed_dim=config["embed_dim"], depth=config["depth"],
        num_heads=config["num_heads"], cond_token_dim=config["cond_token_dim"],
        global_cond_dim=config["global_cond_dim"], global_cond_type="adaLN", timestep_features_type="expo",
        diffusion_objective="rectified_flow", num_memory_tokens=config["num_memory_tokens"],
        local_add_cond_dim=config["local_add_cond_dim"], norm_type="rms_norm",
        attn_kwargs=dict(qk_norm="rms", differential=config["differential"]), ff_kwargs=dict(mult=config["ff_mult"]))
    generator = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        with torch.no_grad():
            if name.endswith("gamma"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=generator))
            elif p.ndim >= 2:  # Linear / 1x1 conv weights: unit gain
                fan_in = int(np.prod(p.shape[1:])) if not name.endswith("memory_tokens") else 1
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(fan_in))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=generator))
    return model.eval()


def rounded_frequencies(blocks, torch):
    """The reference's feature module with correctly rounded float32 frequencies (float64 exp, one rounding)."""
    class Features(blocks.ExpoFourierFeatures):
        def forward(self, t):
            t = t.float()[:, None] if t.dim() == 1 else t.float()
            ramp = np.linspace(0.0, 1.0, self.dim // 2)
            lo, hi = math.log(self.min_freq), math.log(self.max_freq)
            freqs = torch.from_numpy(np.exp(ramp * (hi - lo) + lo).astype(np.float32))
            args = t * freqs * 2 * math.pi
            return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return Features


def inputs(config: dict, torch) -> dict:
    g = torch.Generator().manual_seed(1)
    io = config["io_channels"]
    keep = (torch.rand(BATCH, 1, FRAMES, generator=g) > 0.5).float()  # an inpainting mask: 1 = keep
    latents = torch.randn(BATCH, io, FRAMES, generator=g)
    return dict(x=torch.randn(BATCH, io, FRAMES, generator=g), t=torch.tensor([0.83, 0.27]),
                cross=torch.randn(BATCH, TOKENS, config["cond_token_dim"], generator=g),
                global_embed=torch.randn(BATCH, config["global_cond_dim"], generator=g),
                local=torch.cat([keep, latents * keep], dim=1),
                padding_mask=torch.arange(FRAMES)[None] < torch.tensor(VALID)[:, None])


def run(model, given: dict, padding_mask=None):
    return model(given["x"], given["t"], cross_attn_cond=given["cross"], global_embed=given["global_embed"],
                 local_add_cond=given["local"], padding_mask=padding_mask)


def per_clip_valid(model, given: dict, torch):
    """The varlen semantics: each clip alone on its valid frames, zeros after (never compared)."""
    out = torch.zeros_like(given["x"])
    for b, n in enumerate(VALID):
        one = {k: (v[b:b + 1, ..., :n] if k in ("x", "local") else v[b:b + 1]) for k, v in given.items()}
        out[b:b + 1, :, :n] = run(model, one)
    return out


def conditioner_case(conditioners, blocks, torch) -> dict:
    """The prompt's learned padding and the seconds_total token (clamped: -5 s and 500 s are outside [0, 384])."""
    width = COMMON["cond_token_dim"]
    generator = torch.Generator().manual_seed(2)
    prompt = conditioners.Conditioner(width, width, padding_mode="learned")
    seconds = conditioners.NumberConditioner(width, min_val=0, max_val=384, fourier_features_type="expo")
    seconds.embedder.embedding[0] = rounded_frequencies(blocks, torch)(256)
    for module in (prompt, seconds):
        for p in module.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p.shape[-1] if p.ndim > 1 else 4))
    text = torch.randn(3, TOKENS, width, generator=generator)
    mask = torch.arange(TOKENS)[None] < torch.tensor([5, 2, 0])[:, None]
    given = [-5.0, 47.3, 500.0]
    with torch.no_grad():
        token, _ = seconds(given)
        arrays = {"text": text.numpy(), "mask": mask.numpy(), "seconds": np.array(given, np.float32),
                  "prompt": prompt.apply_padding(text, mask).numpy(), "token": token.numpy()}
    state = {f"conditioner.conditioners.prompt.{k}": v for k, v in prompt.state_dict().items()}
    state |= {f"conditioner.conditioners.seconds_total.{k}": v for k, v in seconds.state_dict().items()}
    return arrays | {f"state/{k}": v.numpy() for k, v in state.items()}


def main(argv=None) -> int:
    args = fixture_arguments(__doc__, "tests/data/sa3_dit_reference.npz", argv)
    import torch
    dit, blocks, conditioners, sampling, shifts = import_reference(
        args.reference, "models.dit", "models.blocks", "models.conditioners", "inference.sampling",
        "inference.distribution_shift")
    arrays = {}
    expo_t = torch.tensor([0.0, 0.1, 0.27, 0.5, 0.83, 1.0])
    arrays["expo/t"] = expo_t.numpy()
    arrays["expo/features"] = blocks.ExpoFourierFeatures(256)(expo_t).numpy()
    for name, config in CONFIGS.items():
        model = build(dit, config, torch)
        model.timestep_features = rounded_frequencies(blocks, torch)(256)
        given = inputs(config, torch)
        with torch.no_grad():
            arrays[f"{name}/out"] = run(model, given).numpy()
            arrays[f"{name}/out_zero_values"] = run(model, given, given["padding_mask"]).numpy()
            arrays[f"{name}/out_exclude"] = per_clip_valid(model, given, torch).numpy()
        for key, value in given.items():
            arrays[f"{name}/in/{key}"] = value.numpy()
        for key, value in model.state_dict().items():
            arrays[f"{name}/state/{key}"] = value.numpy()
    shift = shifts.LogSNRShift(rate=0, anchor_logsnr=-6.2, logsnr_end=2.0)  # the models' default sampling shift
    for steps, t_max in SCHEDULES:
        arrays[f"schedule/{steps}_{t_max}"] = sampling.build_schedule(steps, t_max, shift, fallback_seq_len=100).numpy()
    arrays |= {f"conditioner/{k}": v for k, v in conditioner_case(conditioners, blocks, torch).items()}
    write_fixture(args, arrays, {"configs": CONFIGS, "valid": VALID})
    return 0


if __name__ == "__main__":
    sys.exit(main())
