"""The denoiser's training step on pre-encoded latents, as stable-audio-tools' ``DiffusionCondTrainingWrapper``.

One step: timing tokens from (seconds_start, seconds_total) → conditioning assembled in the reference's order →
per-example CFG dropout of the whole cross-attention sequence (p = 0.1; zeros for the DiT, the learned null
sequence for the U-Net) → timesteps (stratified uniform by default) and Gaussian noise → the objective's target
(v, eps or rectified flow) → MSE (over all frames, as the reference, or only valid frames with
``training.mask_padding``). AdamW on the denoiser and its conditioners (timing embedders, the text projection when
the text width differs from ``cond_dim``) together; the EMA covers the denoiser only and is updated before each
optimiser step (ema_pytorch through Lightning's ``on_before_zero_grad``). The conditioning itself is
``models.conditioned.ConditionedDenoiser``'s, the same the pipeline uses.

Batches are dicts: ``latents [B, T, C]``, ``padding_mask [B, T]``, ``seconds_start [B]``, ``seconds_total [B]``,
``text_embeddings [B, L, D]`` + ``text_mask [B, L]`` (T5 outputs with padded positions zero).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding, PartitionSpec

from stableaudio_jax.diffusion.objectives import diffusion_loss, noisy_example
from stableaudio_jax.models.conditioned import ConditionedDenoiser
from stableaudio_jax.parallel.sharding import in_mesh, normalize_rules, param_shardings
from stableaudio_jax.store.builders import diffusion_model_from_config, resolve_conditioning
from stableaudio_jax.training.accumulate import accumulate
from stableaudio_jax.training.loop import abstract_with_shardings, frozen_without
from stableaudio_jax.training.optim import ema_decay, ema_update, learning_rate, make_optimizer

BATCH_AXES = ("data", "fsdp")
BATCH_KEYS = ("latents", "padding_mask", "seconds_start", "seconds_total", "text_embeddings", "text_mask")


class DiffusionTrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any   # {"denoiser": variables, "timing": variables[, "text_projection": variables]}
    opt: Any
    ema: Any      # EMA of params["denoiser"]
    rng: jax.Array


@flax.struct.dataclass
class DiffusionTraining:
    """Static parts of a run: the conditioned model, optimiser, resolved config and the batch geometry."""

    model: ConditionedDenoiser = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    config: Any = flax.struct.field(pytree_node=False)   # conditioning widths resolved (store.resolve_conditioning)
    text_length: int = flax.struct.field(pytree_node=False)
    text_dim: int = flax.struct.field(pytree_node=False)

    @property
    def denoiser(self) -> nn.Module:
        return self.model.denoiser

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def latent_channels(self) -> int:
        return self.model.latent_channels


def build(config, text_length: int, text_dim: int) -> DiffusionTraining:
    """The run for text features ``[text_length, text_dim]``: the dependent widths follow from them and
    ``conditioning.cond_dim`` (a text projection appears when the widths differ)."""
    resolved = resolve_conditioning(config, text_dim, text_length)
    return DiffusionTraining(diffusion_model_from_config(resolved), make_optimizer(config.training.optimizer),
                             resolved, int(text_length), int(text_dim))


def example_batch(run: DiffusionTraining, batch: int = 1) -> dict:
    """A zero batch of the run's shapes (initialisation and abstract evaluation)."""
    frames = run.config.training.crop_frames
    return {"latents": jnp.zeros((batch, frames, run.latent_channels), jnp.float32),
            "padding_mask": jnp.ones((batch, frames), bool),
            "seconds_start": jnp.zeros((batch,), jnp.float32), "seconds_total": jnp.zeros((batch,), jnp.float32),
            "text_embeddings": jnp.zeros((batch, run.text_length, run.text_dim), jnp.float32),
            "text_mask": jnp.ones((batch, run.text_length), bool)}


def condition(run: DiffusionTraining, params, batch: dict) -> dict:
    """The denoiser's conditioning inputs for ``batch`` (``params``: the model's, timing and projection used)."""
    return run.model.condition(params, batch["text_embeddings"], batch["text_mask"], batch["seconds_start"],
                               batch["seconds_total"])


def _boxed_state(run: DiffusionTraining, rng: jax.Array) -> DiffusionTrainState:
    init_key, state_key = jax.random.split(rng)
    batch = example_batch(run)
    params = run.model.init(init_key, batch["latents"], batch["text_embeddings"], batch["text_mask"])
    return DiffusionTrainState(step=jnp.zeros((), jnp.int32), params=params, opt=run.tx.init(params),
                               ema=params["denoiser"], rng=state_key)


def from_weights(run: DiffusionTraining, state: DiffusionTrainState, params: Any) -> DiffusionTrainState:
    """A fresh run's state around given weights (``--init-from``): new optimiser moments, the EMA starts at them."""
    return state.replace(params=params, opt=run.tx.init(params), ema=params["denoiser"])


def abstract_state(run: DiffusionTraining) -> Any:
    return nn.unbox(jax.eval_shape(lambda k: _boxed_state(run, k), jax.random.key(0)))


def state_shardings(run: DiffusionTraining, mesh, rules) -> Any:
    return param_shardings(jax.eval_shape(lambda k: _boxed_state(run, k), jax.random.key(0)), mesh, rules)


def loss_fn(run: DiffusionTraining, params, batch: dict, rng: jax.Array):
    t = run.config.training
    noise_rng, drop_rng = jax.random.split(rng)
    noisy = noisy_example(noise_rng, batch["latents"].astype(jnp.float32), run.config.diffusion.objective,
                          t.timestep_sampler)
    cond = condition(run, params, batch)
    prediction = run.model.predict(params, noisy.x_t, noisy.t, cond, drop_rng, t.cfg_dropout)
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
    lower: Any  # lower(global_batch) -> the step lowered for abstract inputs (ahead-of-time analysis, benchmarks)
    start_from: Any  # start_from(fresh state, params) -> the state of a run initialised from those weights


_LOOP_KEYS = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "demo", "data", "init_from")


def compiled(config, mesh, text_length: int, text_dim: int) -> CompiledDiffusionTraining:
    """The run's jitted init and step (explicit shardings, donated state), built once per (config without its
    loop settings, mesh, text shape) so that restarting a run in the same process does not recompile."""
    return _compiled(frozen_without(config, _LOOP_KEYS), mesh, int(text_length), int(text_dim))


@functools.lru_cache(maxsize=4)
def _compiled(config, mesh, text_length: int, text_dim: int) -> CompiledDiffusionTraining:
    config = ml_collections.ConfigDict(config.as_configdict())
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
    start_from = jax.jit(functools.partial(from_weights, run), in_shardings=(shardings, shardings.params),
                         out_shardings=shardings, donate_argnums=0)
    abstract = abstract_state(run)

    def lower(global_batch: int):
        batch = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=batch_sharding(mesh)),
                                       jax.eval_shape(lambda: example_batch(run, global_batch)))
        return step.lower(abstract_with_shardings(abstract, shardings), batch)

    return CompiledDiffusionTraining(run, abstract, shardings, in_mesh(init, mesh, rules), in_mesh(step, mesh, rules),
                                     in_mesh(lower, mesh, rules), in_mesh(start_from, mesh, rules))
