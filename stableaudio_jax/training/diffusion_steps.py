"""The denoiser's training step on pre-encoded latents, as stable-audio-tools' ``DiffusionCondTrainingWrapper``.

One step: timing tokens from (seconds_start, seconds_total) → conditioning assembled in the reference's order →
per-example CFG dropout of the whole cross-attention sequence (p = 0.1; zeros for the DiT, the learned null
sequence for the U-Net) → timesteps (stratified uniform by default) and Gaussian noise → the objective's target
(v, eps or rectified flow) → MSE (over all frames, as the reference, or only valid frames with
``training.mask_padding``). AdamW on the denoiser and timing embedders together; the EMA covers the denoiser only
and is updated before each optimiser step (ema_pytorch through Lightning's ``on_before_zero_grad``).

Batches are dicts: ``latents [B, T, C]``, ``padding_mask [B, T]``, ``seconds_start [B]``, ``seconds_total [B]``,
``text_embeddings [B, L, D]`` + ``text_mask [B, L]`` (T5 outputs with padded positions zero).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from stableaudio_jax.diffusion.objectives import diffusion_loss, noisy_example
from stableaudio_jax.models.conditioning import TimingConditioner, assemble_conditioning, cfg_dropout
from stableaudio_jax.parallel.sharding import normalize_rules, param_shardings
from stableaudio_jax.training.accumulate import accumulate
from stableaudio_jax.training.optim import ema_decay, ema_update, learning_rate, make_optimizer

BATCH_AXES = ("data", "fsdp")
BATCH_KEYS = ("latents", "padding_mask", "seconds_start", "seconds_total", "text_embeddings", "text_mask")


class DiffusionTrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any   # {"denoiser": variables, "timing": variables}
    opt: Any
    ema: Any      # EMA of params["denoiser"]
    rng: jax.Array


@flax.struct.dataclass
class DiffusionTraining:
    """Static parts of a run: modules, optimiser, config and the batch geometry."""

    denoiser: nn.Module = flax.struct.field(pytree_node=False)
    timing: TimingConditioner = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    config: Any = flax.struct.field(pytree_node=False)
    text_length: int = flax.struct.field(pytree_node=False)
    text_dim: int = flax.struct.field(pytree_node=False)

    @property
    def kind(self) -> str:
        return self.config.model.type

    @property
    def latent_channels(self) -> int:
        return self.denoiser.io_channels if self.kind == "dit" else self.denoiser.in_channels


def denoiser_from_config(config) -> nn.Module:
    kind = config.model.get("type")
    if kind == "dit":
        from stableaudio_jax.models.dit import dit_from_config
        return dit_from_config(config.model, dtype=config.dtype, param_dtype=config.param_dtype)
    if kind == "unet1d":
        from stableaudio_jax.models.unet import unet_from_config
        return unet_from_config(config.model, dtype=config.dtype, param_dtype=config.param_dtype)
    raise ValueError(f"config.model.type is {kind!r}; the diffusion trainer supports 'dit' and 'unet1d'")


def timing_from_config(config) -> TimingConditioner:
    t = config.conditioning.timing
    return TimingConditioner(features=t.features, min_val=t.min_val, max_val=t.max_val, style=t.style)


def build(config, text_length: int, text_dim: int) -> DiffusionTraining:
    return DiffusionTraining(denoiser_from_config(config), timing_from_config(config),
                             make_optimizer(config.training.optimizer), config, int(text_length), int(text_dim))


def example_batch(run: DiffusionTraining, batch: int = 1) -> dict:
    """A zero batch of the run's shapes (initialisation and abstract evaluation)."""
    frames = run.config.training.crop_frames
    return {"latents": jnp.zeros((batch, frames, run.latent_channels), jnp.float32),
            "padding_mask": jnp.ones((batch, frames), bool),
            "seconds_start": jnp.zeros((batch,), jnp.float32), "seconds_total": jnp.zeros((batch,), jnp.float32),
            "text_embeddings": jnp.zeros((batch, run.text_length, run.text_dim), jnp.float32),
            "text_mask": jnp.ones((batch, run.text_length), bool)}


def condition(run: DiffusionTraining, timing_params, batch: dict, dropout_rng=None) -> dict:
    """Denoiser keyword inputs for ``batch``: DiT (cross_attn_cond, global_cond) or U-Net (embedding + mask)."""
    start, total = run.timing.apply(timing_params, batch["seconds_start"], batch["seconds_total"])
    tokens = {"seconds_start": start, "seconds_total": total}
    mask = batch["text_mask"].astype(bool)
    text = jnp.where(mask[..., None], batch["text_embeddings"].astype(jnp.float32), 0.0)
    cond_cfg = run.config.conditioning
    cross = [tokens[k] for k in cond_cfg.cross_attention_ids if k != "prompt"]
    if run.kind == "unet1d":
        embedding = jnp.concatenate([text] + [c.astype(jnp.float32) for c in cross], axis=1)
        emb_mask = jnp.concatenate([mask, jnp.ones((mask.shape[0], len(cross)), bool)], axis=1)
        drop = {} if dropout_rng is None else dict(dropout_rng=dropout_rng,
                                                    dropout_prob=run.config.training.cfg_dropout)
        return dict(embedding=embedding, embedding_mask=emb_mask, **drop)
    cond = assemble_conditioning(text, mask, cross, [tokens[k] for k in cond_cfg.global_ids])
    if dropout_rng is not None:
        cond = cfg_dropout(dropout_rng, cond, run.config.training.cfg_dropout)
    return dict(cross_attn_cond=cond.cross_attn, global_cond=cond.global_cond)


def _boxed_state(run: DiffusionTraining, rng: jax.Array) -> DiffusionTrainState:
    d_key, t_key, state_key = jax.random.split(rng, 3)
    batch = example_batch(run)
    timing = run.timing.init(t_key, batch["seconds_start"], batch["seconds_total"])
    cond = condition(run, nn.unbox(timing), batch)
    denoiser = run.denoiser.init(d_key, batch["latents"], jnp.zeros((1,)), **cond)
    params = {"denoiser": denoiser, "timing": timing}
    return DiffusionTrainState(step=jnp.zeros((), jnp.int32), params=params, opt=run.tx.init(params),
                               ema=denoiser, rng=state_key)


def abstract_state(run: DiffusionTraining) -> Any:
    return nn.unbox(jax.eval_shape(lambda k: _boxed_state(run, k), jax.random.key(0)))


def state_shardings(run: DiffusionTraining, mesh, rules) -> Any:
    return param_shardings(jax.eval_shape(lambda k: _boxed_state(run, k), jax.random.key(0)), mesh, rules)


def loss_fn(run: DiffusionTraining, params, batch: dict, rng: jax.Array):
    t = run.config.training
    noise_rng, drop_rng = jax.random.split(rng)
    noisy = noisy_example(noise_rng, batch["latents"].astype(jnp.float32), run.config.diffusion.objective,
                          t.timestep_sampler)
    cond = condition(run, params["timing"], batch, drop_rng)
    prediction = run.denoiser.apply(params["denoiser"], noisy.x_t, noisy.t, **cond)
    loss = diffusion_loss(prediction, noisy.target, batch["padding_mask"] if t.mask_padding else None)
    return loss, {"loss": loss}


def train_step(run: DiffusionTraining, state: DiffusionTrainState, batch: dict):
    t = run.config.training
    rng, step_rng = jax.random.split(state.rng)
    grads, metrics = accumulate(lambda p, b, r: loss_fn(run, p, b, r), state.params, batch, step_rng,
                                t.accumulation)
    n = state.step + 1
    e = t.ema
    decay = ema_decay(n, e.beta, e.power, e.get("inv_gamma", 1.0), 0.0, e.update_after_step)
    ema = ema_update(state.ema, state.params["denoiser"], decay)  # before the optimiser step, as the reference
    updates, opt = run.tx.update(grads, state.opt, state.params)
    metrics = dict(metrics, grad_norm=optax.global_norm(grads), lr=learning_rate(t.optimizer, state.step),
                   finite=jnp.isfinite(metrics["loss"]))
    return state.replace(step=n, params=optax.apply_updates(state.params, updates), opt=opt, ema=ema,
                         rng=rng), metrics


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(tuple(a for a in BATCH_AXES if a in mesh.shape)))


@dataclasses.dataclass(frozen=True)
class CompiledDiffusionTraining:
    run: DiffusionTraining
    abstract: Any
    shardings: Any
    init: Any
    step: Any


_COMPILED: dict[str, CompiledDiffusionTraining] = {}
_LOOP_KEYS = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "demo", "data")


def compiled(config, mesh, text_length: int, text_dim: int) -> CompiledDiffusionTraining:
    """The run's jitted init and step (explicit shardings, donated state), built once per (config, mesh, text
    shape) so that restarting a run in the same process does not recompile."""
    training = {k: v for k, v in config.training.to_dict().items() if k not in _LOOP_KEYS}
    key = json.dumps([config.model.to_dict(), config.conditioning.to_dict(), config.diffusion.to_dict(), training,
                      str(config.dtype), str(config.param_dtype), [str(r) for r in config.sharding_rules],
                      dict(mesh.shape), [d.id for d in mesh.devices.flat], text_length, text_dim],
                     sort_keys=True, default=str)
    if key not in _COMPILED:
        run = build(config, text_length, text_dim)
        rules = normalize_rules(config.sharding_rules)
        shardings = state_shardings(run, mesh, rules)
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            init = jax.jit(lambda k: nn.unbox(_boxed_state(run, k)), out_shardings=shardings)

        def step(state, batch):
            with nn.logical_axis_rules(rules):
                return train_step(run, state, batch)

        step = jax.jit(step, in_shardings=(shardings, batch_sharding(mesh)), out_shardings=(shardings, None),
                       donate_argnums=0)
        _COMPILED[key] = CompiledDiffusionTraining(run, abstract_state(run), shardings,
                                                   _in_mesh(init, mesh, rules), _in_mesh(step, mesh, rules))
    return _COMPILED[key]


def _in_mesh(fn, mesh, rules):
    def call(*args):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return fn(*args)
    return call
