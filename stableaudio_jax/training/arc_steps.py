"""Adversarial Relativistic-Contrastive (ARC) post-training of a rectified-flow DiT into a few-step generator
("Fast Text-to-Audio Generation with Adversarial Post-Training", arXiv 2505.08175; written from the paper).

One step, on a batch of real latents ``x0`` with their prompts:

- generator: noise to ``x_t = (1 - t) x0 + t eps``, denoise in one jump ``x̂0 = x_t - t v(x_t, t, c)``;
- both ``x̂0`` and ``x0`` are re-noised to a level ``s`` with the same noise ``z``, and scored by the
  discriminator ``D`` (the denoiser's first ``disc_blocks`` blocks, initialised from the generator, plus
  ``models.arc.ScoreHead``) under the same prompt ``c``;
- generator loss ``softplus(D(x0_s) - D(x̂0_s))`` (relativistic: fakes should score above reals), then the
  generator's AdamW update and EMA;
- discriminator loss ``softplus(D(x̂0_s) - D(x0_s))`` on the updated generator's fakes (the alternating update),
  plus the contrastive term ``softplus(D(x0_s, c_rolled) - D(x0_s, c))`` with prompts rolled by one within the
  batch (real audio should score higher under its own prompt), weighted by ``contrastive_weight``.

``t`` and ``s`` are drawn with the trainer's timestep sampler (stratified uniform by default). Metrics include the
discriminator's accuracy on (real, fake) pairs (the fraction where the real scores higher) and on prompts.
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

from stableaudio_jax.diffusion.objectives import sample_timesteps
from stableaudio_jax.models.arc import ScoreHead
from stableaudio_jax.models.conditioned import ConditionedDenoiser
from stableaudio_jax.models.sa3_conditioning import SA3Conditioned
from stableaudio_jax.parallel.sharding import in_mesh, normalize_rules, param_shardings
from stableaudio_jax.store.builders import diffusion_model_from_config, resolve_conditioning
from stableaudio_jax.training.diffusion_steps import SA3_TYPE, batch_sharding, example_batch, sa3_model
from stableaudio_jax.training.loop import abstract_with_shardings, frozen_without
from stableaudio_jax.training.optim import ema_decay, ema_update, learning_rate, make_optimizer


class ARCTrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any        # the generator: {"denoiser", "timing"[, "text_projection"]}
    opt: Any
    ema: Any           # EMA of params["denoiser"]
    disc_params: Any   # {"denoiser": first blocks, "timing"[, ...], "head"}
    disc_opt: Any
    rng: jax.Array


@flax.struct.dataclass
class ARCTraining:
    model: ConditionedDenoiser = flax.struct.field(pytree_node=False)
    disc: ConditionedDenoiser = flax.struct.field(pytree_node=False)   # its DiT returns hidden states
    head: ScoreHead = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    disc_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    config: Any = flax.struct.field(pytree_node=False)
    text_length: int = flax.struct.field(pytree_node=False)
    text_dim: int = flax.struct.field(pytree_node=False)

    @property
    def latent_channels(self) -> int:
        return self.model.latent_channels

    @property
    def kind(self) -> str:
        return self.model.kind


def build(config, text_length: int, text_dim: int) -> ARCTraining:
    if config.model.type == SA3_TYPE:
        return _build_sa3(config, text_length, text_dim)
    resolved = resolve_conditioning(config, text_dim, text_length)
    if resolved.model.get("type", "dit") != "dit" or resolved.diffusion.objective != "rectified_flow":
        raise ValueError(f"ARC post-trains a rectified-flow DiT; this model is a {resolved.model.get('type', 'dit')} "
                         f"with objective {resolved.diffusion.objective!r} (fine-tune it with --init-from and "
                         "--config.diffusion.objective=rectified_flow first)")
    a = config.training.arc
    depth = int(resolved.model.depth)
    if not 1 <= int(a.disc_blocks) <= depth:
        raise ValueError(f"training.arc.disc_blocks={a.disc_blocks}: expected 1..{depth} (the generator's depth)")
    disc_config = ml_collections.ConfigDict(resolved.to_dict())
    disc_config.model.depth, disc_config.model.features_only = int(a.disc_blocks), True
    head = ScoreHead(int(a.head_hidden), jnp.dtype(config.dtype), jnp.dtype(config.param_dtype))
    return ARCTraining(diffusion_model_from_config(resolved), diffusion_model_from_config(disc_config), head,
                       make_optimizer(config.training.optimizer), make_optimizer(a.disc_optimizer), resolved,
                       int(text_length), int(text_dim))


def _build_sa3(config, text_length: int, text_dim: int) -> ARCTraining:
    """ARC on an SA3 DiT: its discriminator is the DiT's first blocks over the clip's frames (padded frames excluded
    from attention and from the score), conditioned as the generator is; text-to-audio (no inpainting input)."""
    a = config.training.arc
    if not 1 <= int(a.disc_blocks) <= int(config.model.depth):
        raise ValueError(f"training.arc.disc_blocks={a.disc_blocks}: expected 1..{config.model.depth} (the "
                         "generator's depth)")
    disc_config = ml_collections.ConfigDict(config.to_dict())
    disc_config.model.depth, disc_config.model.features_only = int(a.disc_blocks), True
    head = ScoreHead(int(a.head_hidden), jnp.dtype(config.dtype), jnp.dtype(config.param_dtype))
    return ARCTraining(sa3_model(config, text_dim), sa3_model(disc_config, text_dim), head,
                       make_optimizer(config.training.optimizer), make_optimizer(a.disc_optimizer), config,
                       int(text_length), int(text_dim))


def _condition(model, params, batch: dict) -> dict:
    cond = model.condition(params, batch["text_embeddings"], batch["text_mask"], batch["seconds_start"],
                           batch["seconds_total"])
    if model.kind == SA3Conditioned.kind:  # variable-length clips: padded frames masked in attention
        cond = dict(cond, padding_mask=batch["padding_mask"])
    return cond


def _boxed_state(run: ARCTraining, rng: jax.Array) -> ARCTrainState:
    g_key, d_key, h_key, state_key = jax.random.split(rng, 4)
    batch = example_batch(run)
    params = run.model.init(g_key, batch["latents"], batch["text_embeddings"], batch["text_mask"])
    disc = run.disc.init(d_key, batch["latents"], batch["text_embeddings"], batch["text_mask"])
    features = jax.eval_shape(lambda p: _features(run, nn.unbox(p), batch["latents"], jnp.zeros((1,)), batch),
                              disc)
    disc["head"] = run.head.init(h_key, jnp.zeros(features.shape, features.dtype))
    return ARCTrainState(step=jnp.zeros((), jnp.int32), params=params, opt=run.tx.init(params),
                         ema=params["denoiser"], disc_params=disc, disc_opt=run.disc_tx.init(disc), rng=state_key)


def abstract_state(run: ARCTraining) -> Any:
    return nn.unbox(jax.eval_shape(lambda k: _boxed_state(run, k), jax.random.key(0)))


def from_generator(run: ARCTraining, state: ARCTrainState, params: Any) -> ARCTrainState:
    """The state of a run whose generator starts at ``params`` (a pre-trained RF model) and whose discriminator
    trunk starts at the generator's first blocks and conditioners (the head stays fresh)."""
    disc = dict(trunk_from(params, state.disc_params), head=state.disc_params["head"])
    return state.replace(params=params, opt=run.tx.init(params), ema=params["denoiser"], disc_params=disc,
                         disc_opt=run.disc_tx.init(disc))


def trunk_from(generator: dict, disc: dict) -> dict:
    """The generator's conditioners and its denoiser's weights restricted to the discriminator's layers (its first
    blocks: a scanned stack sliced, unrolled ``blocks_i`` kept while the discriminator has them)."""
    def take(g, d):
        if isinstance(d, dict):
            return {k: take(g[k], v) for k, v in d.items()}
        return g[: d.shape[0]] if g.shape != d.shape and g.shape[1:] == d.shape[1:] else g
    return {k: take(generator[k], v) for k, v in disc.items() if k != "head"}


def _features(run: ARCTraining, disc: dict, x, t, batch) -> jax.Array:
    return run.disc.predict(disc, x, t, _condition(run.disc, disc, batch))


def score(run: ARCTraining, disc: dict, x, s, batch) -> jax.Array:
    mask = batch["padding_mask"] if run.model.kind == SA3Conditioned.kind else None
    return run.head.apply(disc["head"], _features(run, disc, x, s, batch), mask)


def _rolled(batch: dict) -> dict:
    return dict(batch, text_embeddings=jnp.roll(batch["text_embeddings"], 1, axis=0),
                text_mask=jnp.roll(batch["text_mask"], 1, axis=0))


def _draws(run: ARCTraining, rng, x0):
    t_key, s_key, eps_key, z_key = jax.random.split(rng, 4)
    sampler = run.config.training.timestep_sampler
    t = sample_timesteps(t_key, x0.shape[0], sampler)
    s = sample_timesteps(s_key, x0.shape[0], sampler)
    return t, s, jax.random.normal(eps_key, x0.shape), jax.random.normal(z_key, x0.shape)


def _fake(run: ARCTraining, params, batch, x0, t, eps):
    """One-step denoising of ``x0`` noised to ``t``: ``x̂0 = x_t - t v``."""
    tb = t[:, None, None]
    x_t = (1 - tb) * x0 + tb * eps
    return x_t - tb * run.model.predict(params, x_t, t, _condition(run.model, params, batch))


def generator_loss(run, params, disc, batch, rng):
    x0 = batch["latents"].astype(jnp.float32)
    t, s, eps, z = _draws(run, rng, x0)
    sb = s[:, None, None]
    fake = (1 - sb) * _fake(run, params, batch, x0, t, eps) + sb * z
    real = (1 - sb) * x0 + sb * z
    d_fake, d_real = score(run, disc, fake, s, batch), score(run, disc, real, s, batch)
    return jnp.mean(jax.nn.softplus(d_real - d_fake)), {"generator_loss": jnp.mean(jax.nn.softplus(d_real - d_fake))}


def discriminator_loss(run, disc, params, batch, rng):
    x0 = batch["latents"].astype(jnp.float32)
    t, s, eps, z = _draws(run, rng, x0)
    sb = s[:, None, None]
    fake = (1 - sb) * jax.lax.stop_gradient(_fake(run, params, batch, x0, t, eps)) + sb * z
    real = (1 - sb) * x0 + sb * z
    d_fake, d_real = score(run, disc, fake, s, batch), score(run, disc, real, s, batch)
    d_wrong = score(run, disc, real, s, _rolled(batch))
    adversarial = jnp.mean(jax.nn.softplus(d_fake - d_real))
    contrastive = jnp.mean(jax.nn.softplus(d_wrong - d_real))
    loss = adversarial + run.config.training.arc.contrastive_weight * contrastive
    return loss, {"discriminator_loss": adversarial, "contrastive_loss": contrastive,
                  "disc_accuracy": jnp.mean((d_real > d_fake).astype(jnp.float32)),
                  "prompt_accuracy": jnp.mean((d_real > d_wrong).astype(jnp.float32))}


def discriminator_accuracy(run: ARCTraining, state: ARCTrainState, batch: dict, rng: jax.Array,
                           draws: int = 16) -> jax.Array:
    """How often the discriminator scores the real latent above the generator's one-step fake, over ``draws``
    draws of noise levels and noise on ``batch`` (0.5 = chance): an evaluation less noisy than the per-step
    metric."""
    def one(key):
        return discriminator_loss(run, state.disc_params, state.params, batch, key)[1]["disc_accuracy"]
    return jnp.mean(jax.vmap(one)(jax.random.split(rng, draws)))


def train_step(run: ARCTraining, state: ARCTrainState, batch: dict):
    t = run.config.training
    rng, g_rng, d_rng = jax.random.split(state.rng, 3)
    (_, g_metrics), grads = jax.value_and_grad(generator_loss, argnums=1, has_aux=True)(
        run, state.params, state.disc_params, batch, g_rng)
    n = state.step + 1
    decay = ema_decay(n, t.ema.beta, t.ema.power, t.ema.get("inv_gamma", 1.0), 0.0, t.ema.update_after_step)
    ema = ema_update(state.ema, state.params["denoiser"], decay)
    updates, opt = run.tx.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    (_, d_metrics), d_grads = jax.value_and_grad(discriminator_loss, argnums=1, has_aux=True)(
        run, state.disc_params, params, batch, d_rng)
    d_updates, disc_opt = run.disc_tx.update(d_grads, state.disc_opt, state.disc_params)
    metrics = dict(g_metrics, **d_metrics, grad_norm=optax.global_norm(grads),
                   disc_grad_norm=optax.global_norm(d_grads), lr=learning_rate(t.optimizer, state.step), loss=g_metrics["generator_loss"],
                   finite=jnp.isfinite(g_metrics["generator_loss"]) & jnp.isfinite(d_metrics["discriminator_loss"]))
    return state.replace(step=n, params=params, opt=opt, ema=ema,
                         disc_params=optax.apply_updates(state.disc_params, d_updates), disc_opt=disc_opt,
                         rng=rng), metrics


@dataclasses.dataclass(frozen=True)
class CompiledARCTraining:
    run: ARCTraining
    abstract: Any
    shardings: Any
    init: Any
    step: Any
    start_from: Any  # start_from(fresh state, generator params) -> the state of a run on a pre-trained generator


_LOOP_KEYS = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "demo", "data", "init_from",
              "check_memory", "device_memory_gib")


def compiled(config, mesh, text_length: int, text_dim: int) -> CompiledARCTraining:
    return _compiled(frozen_without(config, _LOOP_KEYS), mesh, int(text_length), int(text_dim))


@functools.lru_cache(maxsize=2)
def _compiled(config, mesh, text_length: int, text_dim: int) -> CompiledARCTraining:
    config = ml_collections.ConfigDict(config.as_configdict())
    run = build(config, text_length, text_dim)
    rules = normalize_rules(config.sharding_rules)
    shardings = param_shardings(jax.eval_shape(lambda k: _boxed_state(run, k), jax.random.key(0)), mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        init = jax.jit(lambda k: nn.unbox(_boxed_state(run, k)), out_shardings=shardings)

    def step(state, batch):
        with nn.logical_axis_rules(rules):
            return train_step(run, state, batch)

    step = jax.jit(step, in_shardings=(shardings, batch_sharding(mesh)), out_shardings=(shardings, None),
                   donate_argnums=0)
    start_from = jax.jit(functools.partial(from_generator, run), in_shardings=(shardings, shardings.params),
                         out_shardings=shardings, donate_argnums=0)
    return CompiledARCTraining(run, abstract_state(run), shardings, in_mesh(init, mesh, rules),
                               in_mesh(step, mesh, rules), in_mesh(start_from, mesh, rules))


def abstract_with(compiled_run: CompiledARCTraining) -> Any:
    return abstract_with_shardings(compiled_run.abstract, compiled_run.shardings)
