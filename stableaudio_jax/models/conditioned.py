"""The conditioned diffusion model: a denoiser (DiT or U-Net) with its trainable conditioners, as one object.

stable-audio-tools' ``ConditionedDiffusionModelWrapper`` minus the frozen text encoder: the timing conditioner
(seconds_start / seconds_total), the optional text projection (the prompt conditioner's ``proj_out``) and the
denoiser, with the rules that turn (text features, timing) into the denoiser's inputs:

  DiT    cross_attn_cond = concat over the sequence of the ``cross_ids`` in order ([text | start | total]),
         global_cond = concat over channels of the ``global_ids`` ([start | total]); guidance's null = zeros
  U-Net  one cross-attention ``embedding`` of the ``cross_ids`` with its mask; guidance's null is the U-Net's
         learned null sequence (Stable Audio 1.0)

Several text conditioners (T5 and CLAP together, as stable-audio-tools' multi-conditioner allows) arrive as one
sequence: each part's features one after the other along the tokens ([t5 | clap]), zero-padded to the widest
part. ``text_parts`` says where each part lies; each is cut back to its own width, projected by its own
``proj_out`` and masked by its own rule, which is the reference's ``[proj(t5) | proj(clap) | start | total]``.

Training, demos during training, and the inference pipeline all go through :meth:`condition` and
:meth:`predict` / :meth:`guided`, so the three cannot disagree. Parameters are a dict
``{"denoiser": variables, "timing": variables[, "text_projection": variables]}``; with ``text_parts`` the text
projections are ``{"text_projection": {part name: variables}}`` (parts without one are absent).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stableaudio_jax.models.conditioning import Conditioning, TextProjection, TimingConditioner, cfg_dropout
from stableaudio_jax.models.dit import guided as dit_guided
from stableaudio_jax.models.unet import UNet1d

TIMING_IDS = ("seconds_start", "seconds_total")


@dataclass(frozen=True)
class TextPart:
    """One text conditioner's slice of a multi-conditioner text sequence."""
    name: str                              # the conditioner's id ("t5", "clap")
    length: int                            # its tokens in the sequence
    width: int                             # its own feature width (the sequence is padded to the widest)
    projection: TextProjection | None      # its proj_out (None: the features already have cond_dim)
    zero_padded: bool = True               # zero the padded positions after projecting (T5) or not (CLAP)


@dataclass(frozen=True)
class ConditionedDenoiser:
    denoiser: nn.Module                 # DiT or UNet1d
    timing: TimingConditioner
    text_projection: TextProjection | None
    cross_ids: tuple[str, ...] = ("prompt", "seconds_start", "seconds_total")
    global_ids: tuple[str, ...] = ("seconds_start", "seconds_total")
    # T5's conditioner zeroes padded text positions after its projection; CLAP's passes them on unchanged
    zero_padded_text: bool = True
    text_parts: tuple[TextPart, ...] = ()  # several text conditioners (then text_projection is None)

    def __post_init__(self):
        if self.text_parts and self.text_projection is not None:
            raise ValueError("a multi-conditioner model projects each text part itself: text_projection must be None")
        unknown = sorted((set(self.cross_ids) | set(self.global_ids)) - {"prompt", *TIMING_IDS})
        if unknown or "prompt" in self.global_ids:
            raise ValueError(f"conditioning ids {unknown or ['prompt']} are not supported: cross-attention takes "
                             f"'prompt' and {TIMING_IDS}, global conditioning {TIMING_IDS}")
        if self.is_unet and self.global_ids:
            raise ValueError(f"the U-Net takes no global conditioning; global_ids must be empty, got "
                             f"{list(self.global_ids)}")

    @property
    def is_unet(self) -> bool:
        return isinstance(self.denoiser, UNet1d)

    @property
    def kind(self) -> str:
        return "unet1d" if self.is_unet else "dit"

    @property
    def latent_channels(self) -> int:
        return self.denoiser.in_channels if self.is_unet else self.denoiser.io_channels

    # ------------------------------------------------------------------------------------------ parameters

    def init(self, rng: jax.Array, latents: jax.Array, text: jax.Array, text_mask: jax.Array) -> dict:
        """Boxed (logically partitioned) variables for every part, from example inputs."""
        d_key, t_key, p_key = jax.random.split(rng, 3)
        seconds = jnp.zeros(latents.shape[:1], jnp.float32)
        params = {"timing": self.timing.init(t_key, seconds, seconds)}
        if self.text_projection is not None:
            params["text_projection"] = self.text_projection.init(p_key, text.astype(jnp.float32))
        projected = [p for p in self.text_parts if p.projection is not None]
        if projected:
            keys = jax.random.split(p_key, len(projected))
            params["text_projection"] = {p.name: p.projection.init(k, jnp.zeros(text.shape[:1] + (1, p.width)))
                                         for p, k in zip(projected, keys)}
        cond = self.condition(nn.unbox(params), text, text_mask, seconds, seconds)
        params["denoiser"] = self.denoiser.init(d_key, latents, jnp.zeros(latents.shape[:1]), **cond)
        return params

    # ---------------------------------------------------------------------------------------- conditioning

    def project_text(self, params: dict, text: jax.Array, text_mask: jax.Array) -> jax.Array:
        """Text features → conditioning width; padded positions zero unless ``zero_padded_text`` is off (the
        reference's T5 conditioner projects, then masks; its CLAP conditioner only projects)."""
        text = text.astype(jnp.float32)
        if self.text_parts:
            return self._project_parts(params, text, text_mask)
        if self.text_projection is not None:
            text = self.text_projection.apply(params["text_projection"], text).astype(jnp.float32)
        return jnp.where(text_mask[..., None].astype(bool), text, 0.0) if self.zero_padded_text else text

    def _project_parts(self, params: dict, text: jax.Array, text_mask: jax.Array) -> jax.Array:
        expected = sum(p.length for p in self.text_parts)
        if text.shape[1] != expected:
            raise ValueError(f"text features have {text.shape[1]} tokens; the text parts "
                             f"{[(p.name, p.length) for p in self.text_parts]} make {expected}")
        pieces, start = [], 0
        for part in self.text_parts:
            piece, mask = text[:, start:start + part.length, :part.width], text_mask[:, start:start + part.length]
            if part.projection is not None:
                piece = part.projection.apply(params["text_projection"][part.name], piece).astype(jnp.float32)
            pieces.append(jnp.where(mask[..., None].astype(bool), piece, 0.0) if part.zero_padded else piece)
            start += part.length
        return jnp.concatenate(pieces, axis=1)

    def condition(self, params: dict, text: jax.Array, text_mask: jax.Array, seconds_start: jax.Array,
                  seconds_total: jax.Array) -> dict:
        """The denoiser's conditioning keyword inputs: DiT ``cross_attn_cond`` + ``global_cond``; U-Net
        ``embedding`` + ``embedding_mask``."""
        start, total = self.timing.apply(params["timing"], seconds_start, seconds_total)
        timing = {"seconds_start": start, "seconds_total": total}
        mask = text_mask.astype(bool)
        text = self.project_text(params, text, mask)
        tokens = [text if k == "prompt" else timing[k].astype(jnp.float32) for k in self.cross_ids]
        masks = [mask if k == "prompt" else jnp.ones(mask.shape[:1] + (1,), bool) for k in self.cross_ids]
        if self.is_unet:
            return dict(embedding=jnp.concatenate(tokens, axis=1), embedding_mask=jnp.concatenate(masks, axis=1))
        return dict(cross_attn_cond=jnp.concatenate(tokens, axis=1),
                    global_cond=jnp.concatenate([timing[k][:, 0].astype(jnp.float32) for k in self.global_ids], -1))

    # ---------------------------------------------------------------------------------------- predictions

    def predict(self, params: dict, x: jax.Array, t: jax.Array, cond: dict, dropout_rng: jax.Array | None = None,
                dropout_prob: float = 0.0, rngs: dict | None = None) -> jax.Array:
        """The denoiser's output (no guidance). With ``dropout_rng``: training-time CFG dropout of the whole
        cross-attention sequence (zeros for the DiT, the learned null for the U-Net). ``rngs``: the denoiser's
        own (LoRA adapter dropout)."""
        if self.is_unet:
            drop = {} if dropout_rng is None else dict(dropout_rng=dropout_rng, dropout_prob=dropout_prob)
            return self.denoiser.apply(params["denoiser"], x, t, **cond, **drop, rngs=rngs)
        if dropout_rng is not None:
            c = Conditioning(cond["cross_attn_cond"], jnp.ones(cond["cross_attn_cond"].shape[:2], bool),
                             cond["global_cond"])
            cond = dict(cross_attn_cond=cfg_dropout(dropout_rng, c, dropout_prob).cross_attn,
                        global_cond=cond["global_cond"])
        return self.denoiser.apply(params["denoiser"], x, t, **cond, rngs=rngs)

    def guided(self, params: dict, x: jax.Array, t: jax.Array, cond: dict, cfg_scale, cfg_rescale=0.0,
               negative: dict | None = None) -> jax.Array:
        """Classifier-free guidance in one batched call: ``uncond + cfg_scale * (cond - uncond)``, optionally
        CFG-rescaled by ``cfg_rescale``. ``negative`` (another :meth:`condition` result) replaces the null
        branch (DiT: its cross-attention tokens; U-Net: its embedding where its mask is set)."""
        if self.is_unet:
            neg = {} if negative is None else dict(negative_embedding=negative["embedding"],
                                                   negative_mask=negative["embedding_mask"])
            return self.denoiser.apply(params["denoiser"], x, t, **cond, cfg_scale=cfg_scale, scale_phi=cfg_rescale,
                                       **neg)
        apply = functools.partial(self.denoiser.apply, params["denoiser"])
        uncond = None if negative is None else negative["cross_attn_cond"]
        return dit_guided(apply, x, t, cond["cross_attn_cond"], cond["global_cond"], cfg_scale, cfg_rescale, uncond)


def example_text(batch: int, length: int, width: int) -> tuple[jax.Array, jax.Array]:
    """Zero text features and an all-true mask: shapes for initialisation and abstract evaluation."""
    return jnp.zeros((batch, length, width), jnp.float32), jnp.ones((batch, length), bool)


def abstract_params(model: ConditionedDenoiser, frames: int, text_length: int, text_width: int) -> Any:
    """Shapes and dtypes of the model's parameters (nothing allocated)."""
    def init(key):
        text, mask = example_text(1, text_length, text_width)
        return nn.unbox(model.init(key, jnp.zeros((1, frames, model.latent_channels)), text, mask))
    return jax.eval_shape(init, jax.random.key(0))

