"""The VAE's adversarial training steps, as stable-audio-tools' ``AutoencoderTrainingWrapper`` takes them.

Batches alternate: even global steps update the autoencoder (generator), odd steps the discriminator, one
optimiser step per batch. During the first ``training.warmup_steps`` batches (the reference's ``warmup_steps``,
default 0) every batch updates the autoencoder with the spectral and KL terms only and the discriminator is not
run at all: a quick spectral warm-up, and the whole recipe for fast CPU demos. The generator loss is
    0.1 * adversarial + 5 * feature matching + spectral (SD + 0.5 L + 0.5 R MRSTFT) + 1e-4 * KL
with latents sampled from the posterior and the *current* discriminator; the EMA of the autoencoder is updated
before its optimiser step. The discriminator loss is the hinge loss on real audio vs the (stopped) reconstruction.

Steps are pure functions of (state, batch); ``make_steps`` returns them jitted with explicit in/out shardings and
the state donated. Gradient accumulation splits the per-step batch into ``accumulation`` micro-batches (scan).
"""
from __future__ import annotations

from typing import Any

import dataclasses
import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding, PartitionSpec

from stableaudio_jax.audio.losses import vae_reconstruction_loss
from stableaudio_jax.models.autoencoder import BottleneckVAE
from stableaudio_jax.models.discriminator import (MultiScaleSTFTDiscriminator, discriminator_loss,
                                                  feature_matching_loss, generator_adversarial_loss)
from stableaudio_jax.parallel.sharding import in_mesh, normalize_rules, param_shardings
from stableaudio_jax.training.accumulate import accumulate
from stableaudio_jax.training.loop import frozen_without
from stableaudio_jax.training.optim import (ema_decay, ema_place, ema_shardings, ema_start, ema_step, learning_rate,
                                           make_optimizer)


class VAETrainState(flax.struct.PyTreeNode):
    step: jax.Array          # batches processed (generator and discriminator steps together)
    gen_steps: jax.Array     # generator updates so far
    disc_steps: jax.Array    # discriminator updates so far
    gen_params: Any
    gen_opt: Any
    ema_params: Any          # None without an EMA; in host memory with training.ema.place=host
    disc_params: Any
    disc_opt: Any
    rng: jax.Array


@flax.struct.dataclass
class VAETraining:
    """Everything static about the run: modules, optimisers, loss weights."""

    vae: BottleneckVAE = flax.struct.field(pytree_node=False)
    disc: MultiScaleSTFTDiscriminator = flax.struct.field(pytree_node=False)
    gen_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    disc_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    config: Any = flax.struct.field(pytree_node=False)


def build(config) -> VAETraining:
    from stableaudio_jax.store.builders import vae_from_config  # Oobleck or DAC
    t = config.training
    vae = vae_from_config(config.model, dtype=config.dtype, param_dtype=config.param_dtype)
    d = t.discriminator
    disc = MultiScaleSTFTDiscriminator(tuple(d.n_ffts), tuple(d.hops), None, d.filters, jnp.dtype(config.dtype),
                                       jnp.dtype(config.param_dtype))
    return VAETraining(vae, disc, make_optimizer(t.gen_optimizer), make_optimizer(t.disc_optimizer), config)


def _boxed_state(run: VAETraining, rng: jax.Array, crop: int, channels: int) -> VAETrainState:
    gen_key, disc_key, state_key = jax.random.split(rng, 3)
    audio = jnp.zeros((1, crop, channels), jnp.float32)
    gen = run.vae.init(gen_key, audio, sample=False)
    disc = run.disc.init(disc_key, audio)
    zero = jnp.zeros((), jnp.int32)
    return VAETrainState(step=zero, gen_steps=zero, disc_steps=zero, gen_params=gen, gen_opt=run.gen_tx.init(gen),
                         ema_params=ema_start(gen, ema_place(run.config.training.ema)), disc_params=disc,
                         disc_opt=run.disc_tx.init(disc), rng=state_key)


def from_weights(run: VAETraining, state: VAETrainState, gen_params: Any) -> VAETrainState:
    """A fresh run's state around given VAE weights (``--init-from``): new generator optimiser moments, the EMA
    starts at them; the discriminator stays freshly initialised."""
    return state.replace(gen_params=gen_params, gen_opt=run.gen_tx.init(gen_params),
                         ema_params=ema_start(gen_params, ema_place(run.config.training.ema)))


def abstract_state(run: VAETraining, crop: int, channels: int) -> Any:
    """Shapes and dtypes of the train state (nothing allocated)."""
    return nn.unbox(jax.eval_shape(lambda k: _boxed_state(run, k, crop, channels), jax.random.key(0)))


def state_shardings(run: VAETraining, mesh, rules, crop: int, channels: int) -> Any:
    """NamedShardings of every leaf of the train state (optimizer moments follow their parameters)."""
    abstract = jax.eval_shape(lambda k: _boxed_state(run, k, crop, channels), jax.random.key(0))
    shardings = param_shardings(abstract, mesh, rules)
    return shardings.replace(ema_params=ema_shardings(shardings.ema_params, ema_place(run.config.training.ema)))


def init_state(run: VAETraining, rng: jax.Array, mesh, rules, crop: int, channels: int) -> VAETrainState:
    """The initial state, materialised directly in its shardings."""
    shardings = state_shardings(run, mesh, rules, crop, channels)
    with jax.set_mesh(mesh), nn.logical_axis_rules(normalize_rules(rules)):
        return jax.jit(lambda k: nn.unbox(_boxed_state(run, k, crop, channels)), out_shardings=shardings)(rng)


def generator_loss(run: VAETraining, gen_params, disc_params, audio, rng, adversarial: bool = True):
    t = run.config.training
    out = run.vae.apply(gen_params, audio, rng, sample=bool(t.get("sample_posterior", True)))
    decoded = out.reconstruction.astype(jnp.float32)
    terms = {}
    if adversarial:
        real_logits, real_features = run.disc.apply(disc_params, audio)
        fake_logits, fake_features = run.disc.apply(disc_params, decoded)
        terms = {"loss_adv": t.loss_weights.adversarial * generator_adversarial_loss(fake_logits),
                 "feature_matching_loss": t.loss_weights.feature_matching * feature_matching_loss(real_features,
                                                                                                 fake_features)}
    terms |= {"spectral_loss": t.loss_weights.spectral * vae_reconstruction_loss(
                 audio, decoded, fft_sizes=tuple(t.spectral.fft_sizes), hop_sizes=tuple(t.spectral.hop_sizes),
                 perceptual_weighting=t.spectral.perceptual_weighting, sample_rate=run.vae.sample_rate),
             "kl_loss": t.loss_weights.kl * out.posterior.kl()}
    total = sum(terms.values())
    return total, dict(terms, loss=total, latent_std=jnp.std(out.latents))


def discriminator_step_loss(run: VAETraining, disc_params, gen_params, audio, rng):
    decoded = jax.lax.stop_gradient(run.vae.apply(gen_params, audio, rng, sample=True).reconstruction)
    real_logits, _ = run.disc.apply(disc_params, audio)
    fake_logits, _ = run.disc.apply(disc_params, decoded.astype(jnp.float32))
    loss = discriminator_loss(real_logits, fake_logits)
    return loss, {"discriminator_loss": loss}


def generator_step(run: VAETraining, state: VAETrainState, audio: jax.Array, adversarial: bool = True):
    t = run.config.training
    rng, step_rng = jax.random.split(state.rng)
    count = t.accumulation
    loss_fn = lambda p, a, r: generator_loss(run, p, state.disc_params, a, r, adversarial)  # noqa: E731
    grads, metrics = accumulate(loss_fn, state.gen_params, audio, step_rng, count)
    n = state.gen_steps + 1
    e = t.ema
    decay = ema_decay(n, e.beta, e.power, e.get("inv_gamma", 1.0), 0.0, e.update_after_step)
    # before the optimiser step, as the reference
    ema = ema_step(state.ema_params, state.gen_params, decay, ema_place(e))
    updates, gen_opt = run.gen_tx.update(grads, state.gen_opt, state.gen_params)
    metrics = dict(metrics, grad_norm=optax.global_norm(grads), gen_lr=learning_rate(t.gen_optimizer, state.gen_steps),
                   finite=jnp.isfinite(metrics["loss"]))
    new = state.replace(step=state.step + 1, gen_steps=n, gen_params=optax.apply_updates(state.gen_params, updates),
                        gen_opt=gen_opt, ema_params=ema, rng=rng)
    return new, metrics


def discriminator_step(run: VAETraining, state: VAETrainState, audio: jax.Array):
    t = run.config.training
    rng, step_rng = jax.random.split(state.rng)
    count = t.accumulation
    loss_fn = lambda p, a, r: discriminator_step_loss(run, p, state.gen_params, a, r)  # noqa: E731
    grads, metrics = accumulate(loss_fn, state.disc_params, audio, step_rng, count)
    updates, disc_opt = run.disc_tx.update(grads, state.disc_opt, state.disc_params)
    metrics = dict(metrics, disc_grad_norm=optax.global_norm(grads),
                   disc_lr=learning_rate(t.disc_optimizer, state.disc_steps),
                   finite=jnp.isfinite(metrics["discriminator_loss"]))
    new = state.replace(step=state.step + 1, disc_steps=state.disc_steps + 1,
                        disc_params=optax.apply_updates(state.disc_params, updates), disc_opt=disc_opt, rng=rng)
    return new, metrics


BATCH_AXES = ("data", "fsdp")


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(tuple(a for a in BATCH_AXES if a in mesh.shape)))


def warmup_step(run: VAETraining, state: VAETrainState, audio: jax.Array):
    """A generator update without the discriminator (spectral + KL), for the first ``warmup_steps`` batches."""
    return generator_step(run, state, audio, adversarial=False)


def make_steps(run: VAETraining, shardings: Any, mesh, rules):
    """(generator_step, discriminator_step, warmup_step), each ``jax.jit`` with explicit shardings and the state
    donated (compiled at their first call: a run that never warms up never compiles the warm-up step)."""
    batch = batch_sharding(mesh)
    rules = normalize_rules(rules)

    def wrap(fn):
        def step(state, audio):
            with nn.logical_axis_rules(rules):
                return fn(run, state, audio)
        return jax.jit(step, in_shardings=(shardings, batch), out_shardings=(shardings, None), donate_argnums=0)

    return wrap(generator_step), wrap(discriminator_step), wrap(warmup_step)


def step_kind(step: int, warmup_steps: int = 0) -> str:
    """After the warm-up, even global steps train the generator, odd ones the discriminator (the reference's
    alternation: ``global_step % 2 and warmed_up``)."""
    if step < warmup_steps:
        return "warmup"
    return "discriminator" if step % 2 else "generator"


@dataclasses.dataclass(frozen=True)
class CompiledVAETraining:
    run: VAETraining
    abstract: Any
    shardings: Any
    init: Any
    generator_step: Any
    discriminator_step: Any
    warmup_step: Any
    start_from: Any  # start_from(fresh state, VAE params) -> the state of a run initialised from those weights

    def step_for(self, step: int, warmup_steps: int = 0):
        kind = step_kind(step, warmup_steps)
        return {"warmup": self.warmup_step, "generator": self.generator_step,
                "discriminator": self.discriminator_step}[kind]


_LOOP_KEYS = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "warmup_steps", "init_from",
              "check_memory", "device_memory_gib")


def compiled(config, mesh) -> CompiledVAETraining:
    """The run's jitted functions, built once per (model/training config without loop settings, mesh) so that
    restarting or resuming a run in the same process does not recompile."""
    return _compiled(frozen_without(config, _LOOP_KEYS), mesh)


@functools.lru_cache(maxsize=4)
def _compiled(config, mesh) -> CompiledVAETraining:
    config = ml_collections.ConfigDict(config.as_configdict())
    t, rules = config.training, config.sharding_rules
    run = build(config)
    channels = config.model.audio_channels
    shardings = state_shardings(run, mesh, rules, t.crop_samples, channels)
    abstract = abstract_state(run, t.crop_samples, channels)
    with jax.set_mesh(mesh), nn.logical_axis_rules(normalize_rules(rules)):
        init = jax.jit(lambda k: nn.unbox(_boxed_state(run, k, t.crop_samples, channels)), out_shardings=shardings)
    start_from = jax.jit(functools.partial(from_weights, run), in_shardings=(shardings, shardings.gen_params),
                         out_shardings=shardings, donate_argnums=0)
    return CompiledVAETraining(run, abstract, shardings, in_mesh(init, mesh, rules),
                               *make_steps(run, shardings, mesh, rules), in_mesh(start_from, mesh, rules))
