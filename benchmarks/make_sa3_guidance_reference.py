"""Writes tests/data/sa3_guidance_reference.npz: Stable Audio 3's classifier-free guidance with adaptive projected
guidance (APG), the guidance-norm threshold and CFG-rescale, as the reference's ``DiffusionTransformer.forward``
computes them, for given conditional and unconditional predictions.

  python benchmarks/make_sa3_guidance_reference.py --reference /tmp/sa3 --out tests/data/sa3_guidance_reference.npz

The reference's own ``forward`` runs on a stand-in object whose ``_forward`` returns fixed [cond; uncond]
predictions, so every line of its guidance arithmetic is the reference's; nothing of the network runs. Cases: both
objectives (v and rectified flow), APG off, full and mixed, with and without the norm threshold, CFG-rescale, and a
padding mask (batch 2, 8 channels, 12 frames, the second item padded after frame 7).
"""
from __future__ import annotations

import json
import os
import sys
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sa3_reference import fixture_arguments, import_reference, reference_commit  # noqa: E402

CASES = [dict(objective=o, cfg_scale=4.5, apg_scale=a, cfg_norm_threshold=n, scale_phi=p, padded=m)
         for o in ("v", "rectified_flow") for a, n, p, m in
         ((0.0, 0.0, 0.0, False), (1.0, 0.0, 0.0, False), (0.5, 0.0, 0.0, False), (1.0, 2.0, 0.0, False),
          (1.0, 0.0, 0.7, False), (1.0, 2.0, 0.0, True), (0.5, 0.0, 0.0, True))]


def stand_in(dit_class, torch, objective: str, batch_output):
    """An object the reference's ``DiffusionTransformer.forward`` can run on: its attributes, no network."""
    model = types.SimpleNamespace(diffusion_objective=objective, parameters=lambda: iter([torch.zeros(1)]),
                                  named_modules=lambda: iter([]), modules=lambda: iter([]))
    model._forward = lambda *args, **kwargs: batch_output
    model.apg_project = types.MethodType(dit_class.apg_project, model)
    return model


def main(argv=None) -> int:
    args = fixture_arguments(__doc__, "tests/data/sa3_guidance_reference.npz", argv)
    import torch
    (dit,) = import_reference(args.reference, "models.dit")
    generator = torch.Generator().manual_seed(0)
    x, cond, uncond = (torch.randn(2, 8, 12, generator=generator) for _ in range(3))
    t = torch.tensor([0.3, 0.8])
    padding = torch.ones(2, 12, dtype=torch.bool)
    padding[1, 8:] = False
    arrays = {"x": x.numpy(), "t": t.numpy(), "cond": cond.numpy(), "uncond": uncond.numpy(),
              "padding_mask": padding.numpy()}
    for i, case in enumerate(CASES):
        model = stand_in(dit.DiffusionTransformer, torch, case["objective"], torch.cat([cond, uncond]))
        out = dit.DiffusionTransformer.forward(
            model, x, t, cross_attn_cond=torch.zeros(2, 3, 4), cfg_scale=case["cfg_scale"],
            apg_scale=case["apg_scale"], cfg_norm_threshold=case["cfg_norm_threshold"], scale_phi=case["scale_phi"],
            padding_mask=padding if case["padded"] else None)
        arrays[f"case{i}"] = out.numpy()
    arrays["cases"] = np.array(json.dumps({"cases": CASES, "torch": torch.__version__,
                                           "reference_commit": reference_commit(args.reference,
                                                                                args.reference_commit)}))
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {len(CASES)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
