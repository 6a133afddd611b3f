"""Rebuild (or check) tests/data/unet_reference.npz, the U-Net parity fixture of tests/test_unet.py.

  python benchmarks/make_unet_reference.py --stable-audio-tools /path/to/stable-audio-tools --check

What it makes: the outputs of stable-audio-tools' ``UNetCFG1d`` for the ``tiny`` config of configs/unet.py, with
``tests/helpers.synthetic_state_dict(shapes, seed=0)`` weights, on fixed inputs, for four calls: ``plain`` (with the
text mask), ``nomask``, ``cfg_rescaled`` (batched CFG, scale 3, rescaled with phi 0.4) and ``cfg_negative`` (batched
CFG, scale 3, a negative prompt with its own mask, no rescale). The stored fixture was made with stable-audio-tools
commit 50049e379e2fe8e35bffc99e57f23ade1c3471b7 (50049e3) in float32; this script runs it on CPU (einsum attention).

The reference is imported at run time from the checkout given by ``--stable-audio-tools`` (nothing of it is copied
here); it needs torch, einops and einops-exts (``pip install einops-exts``), not torchaudio. Only
``stable_audio_tools/models/adp.py`` is loaded: the two package ``__init__`` files (which import the model factory
and everything behind it) are replaced by empty package shells whose ``__path__`` points into the checkout.

File contents (arrays channels-last, as our U-Net takes them; torch gets them transposed to [B, C, L]):
  config        JSON: the ``model.diffusion.config`` of an ``adp_cfg_1d`` model equal to configs/unet.py:tiny
  shapes        JSON: {state-dict key: shape} of that reference model, in its state-dict order
  x [2, 32, 8], embedding [2, 6, 32], negative [2, 6, 32]   numpy default_rng(1) normals, drawn in that order
  t [2] = (0.15, 0.8); mask: 4 and 6 real tokens; negative_mask: 6 and 2 real tokens
  plain, nomask, cfg_rescaled, cfg_negative [2, 32, 8]       the reference's outputs

Without ``--check`` the file at ``--out`` is (re)written; with it nothing is written and every array is compared
with the stored one (inputs, config and shapes must be identical, outputs within ``--atol``, default 1e-4 as in
tests/test_unet.py); the exit status is 1 on a mismatch. A fresh float32 run differs from the stored outputs by
~1e-5 (values up to ~8; the CFG cases amplify by the scale 3): float32 accumulation order (torch build, BLAS, thread
count). Both are within ~1.6e-5 of the same calls run in float64, whereas a wrong call (no rescale, no negative mask,
no text mask) is off by more than 1.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "tests", "data", "unet_reference.npz")
CASES = ("plain", "nomask", "cfg_rescaled", "cfg_negative")
# Our model-config keys -> stable-audio-tools UNet1d keys (the inverse of convert.unet_config_from_stable_audio_tools).
SAT_KEYS = ("in_channels", "context_embedding_features", "context_embedding_max_length", "channels", "resnet_groups",
            "kernel_multiplier_downsample", "multipliers", "factors", "num_blocks", "attentions", "attention_heads",
            "attention_multiplier")
OURS = {"context_embedding_features": "context_features", "context_embedding_max_length": "context_max_length"}
FIXED = {"use_nearest_upsample": False, "use_skip_scale": True, "use_context_time": True}


def load_helpers():
    """tests/helpers.py, imported by path (it is what pytest imports as ``helpers``)."""
    sys.path.insert(0, ROOT)  # our stableaudio_jax from this tree, not an installed copy
    spec = importlib.util.spec_from_file_location("helpers", os.path.join(ROOT, "tests", "helpers.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    return helpers


def import_adp(checkout: str):
    """``stable_audio_tools.models.adp`` from the user's checkout, without running the package ``__init__`` files."""
    package_dir = os.path.join(os.path.abspath(checkout), "stable_audio_tools")
    if not os.path.isfile(os.path.join(package_dir, "models", "adp.py")):
        sys.exit(f"{checkout}: no stable_audio_tools/models/adp.py; pass a stable-audio-tools checkout")
    sys.path.insert(0, os.path.abspath(checkout))
    for name, path in (("stable_audio_tools", package_dir), ("stable_audio_tools.models",
                                                             os.path.join(package_dir, "models"))):
        shell = types.ModuleType(name)
        shell.__path__ = [path]
        sys.modules[name] = shell
    import stable_audio_tools.models.adp as adp
    return adp


def checkout_commit(checkout: str) -> str:
    try:
        return subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def reference_config(helpers) -> dict:
    """The adp_cfg_1d config equal to configs/unet.py:tiny (context widths resolved as the trainer does)."""
    ours = helpers.model_config(os.path.join(ROOT, "configs", "unet.py") + ":tiny")
    cfg = {}
    for key in SAT_KEYS:
        value = ours[OURS.get(key, key)]
        cfg[key] = list(value) if isinstance(value, (tuple, list)) else int(value)
    cfg.update(FIXED)
    return cfg


def make_inputs() -> dict:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 32, 8)).astype(np.float32)
    embedding = rng.standard_normal((2, 6, 32)).astype(np.float32)
    negative = rng.standard_normal((2, 6, 32)).astype(np.float32)
    return dict(x=x, t=np.array([0.15, 0.8], np.float32), embedding=embedding,
                mask=np.arange(6)[None] < np.array([[4], [6]]), negative=negative,
                negative_mask=np.arange(6)[None] < np.array([[6], [2]]))


def build(checkout: str) -> dict:
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the reference's non-flash (CPU, einsum) attention path
    helpers = load_helpers()
    adp = import_adp(checkout)
    import torch

    config = reference_config(helpers)
    model = adp.UNetCFG1d(**config).eval()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    state = helpers.synthetic_state_dict(shapes, seed=0)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)

    inputs = make_inputs()
    x = torch.from_numpy(inputs["x"]).transpose(1, 2).contiguous()  # [B, L, C] -> [B, C, L]
    t = torch.from_numpy(inputs["t"])
    embedding, mask = torch.from_numpy(inputs["embedding"]), torch.from_numpy(inputs["mask"])
    negative, negative_mask = torch.from_numpy(inputs["negative"]), torch.from_numpy(inputs["negative_mask"])
    calls = {
        "plain": dict(embedding=embedding, embedding_mask=mask),
        "nomask": dict(embedding=embedding),
        "cfg_rescaled": dict(embedding=embedding, embedding_mask=mask, embedding_scale=3.0, batch_cfg=True,
                             rescale_cfg=True, scale_phi=0.4),
        "cfg_negative": dict(embedding=embedding, embedding_mask=mask, embedding_scale=3.0, batch_cfg=True,
                             rescale_cfg=False, negative_embedding=negative, negative_embedding_mask=negative_mask),
    }
    outputs = {}
    with torch.no_grad():
        for case in CASES:
            outputs[case] = model(x, t, embedding_mask_proba=0.0, **calls[case]).transpose(1, 2).numpy()
    return dict(config=np.array(json.dumps(config)), shapes=np.array(json.dumps(shapes)), **inputs,
                **{case: np.ascontiguousarray(outputs[case], dtype=np.float32) for case in CASES})


def compare(fresh: dict, stored: dict, atol: float) -> bool:
    ok = True
    for key in sorted(set(fresh) | set(stored), key=lambda k: list(fresh).index(k) if k in fresh else 99):
        if key not in fresh or key not in stored:
            print(f"{key:14s} only in the {'stored' if key in stored else 'fresh'} file")
            ok = False
            continue
        a, b = fresh[key], stored[key]
        if a.dtype.kind == "U":
            same = str(a) == str(b)
            print(f"{key:14s} {'identical' if same else 'DIFFERS'}")
            ok &= same
            continue
        if a.shape != b.shape or a.dtype != b.dtype:
            print(f"{key:14s} shape/dtype {a.shape} {a.dtype} vs stored {b.shape} {b.dtype}")
            ok = False
            continue
        diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
        limit = atol if key in CASES else 0.0
        extra = f"  (max |stored| {np.abs(b).max():.3f}, relative {diff / np.abs(b).max():.1e})" if key in CASES else ""
        print(f"{key:14s} {str(a.shape):12s} max abs diff {diff:.3e}{extra}{'' if diff <= limit else '  MISMATCH'}")
        ok &= diff <= limit
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stable-audio-tools", required=True, metavar="PATH",
                        help="a local checkout of https://github.com/Stability-AI/stable-audio-tools")
    parser.add_argument("--out", default=DEFAULT_OUT, help="the fixture to write or check (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare with the existing --out instead of writing")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="--check: tolerance on the outputs (default: %(default)s)")
    args = parser.parse_args(argv)

    checkout = args.stable_audio_tools
    print(f"stable-audio-tools: {os.path.abspath(checkout)} at {checkout_commit(checkout)}")
    fresh = build(checkout)
    if args.check:
        with np.load(args.out) as stored:
            ok = compare(fresh, dict(stored), args.atol)
        print("agrees with" if ok else "DIFFERS from", args.out)
        return 0 if ok else 1
    np.savez_compressed(args.out, **fresh)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v.shape}" for k, v in fresh.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
