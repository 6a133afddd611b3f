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

LoRA fine-tuning (``training.lora.rank`` > 0, ``models/lora.py``): the state's ``params`` are the adapters alone
(``{"lora": ...}``: what is optimised, EMA-averaged and checkpointed); the frozen base weights are the step's third
argument (``base``: the run's full parameter tree, loaded from ``--init-from``), never differentiated or saved.
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
from stableaudio_jax.models import lora
from stableaudio_jax.models.conditioned import ConditionedDenoiser
from stableaudio_jax.models.sa3_conditioning import SA3Conditioned
from stableaudio_jax.parallel.sharding import in_mesh, normalize_rules, param_shardings
from stableaudio_jax.store.builders import diffusion_model_from_config, resolve_conditioning
from stableaudio_jax.store.sa3 import denoiser_from_config
from stableaudio_jax.training import sa3_steps
from stableaudio_jax.training.accumulate import accumulate
from stableaudio_jax.training.loop import abstract_with_shardings, frozen_without
from stableaudio_jax.training.optim import (ema_decay, ema_place, ema_shardings, ema_start, ema_step, learning_rate,
                                           make_optimizer)

BATCH_AXES = ("data", "fsdp")
SA3_TYPE = "sa3_dit"  # config.model.type of an SA3 DiT (configs/sa3.py): models.sa3_conditioning.SA3Conditioned
BATCH_KEYS = ("latents", "padding_mask", "seconds_start", "seconds_total", "text_embeddings", "text_mask")


class DiffusionTrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any   # {"denoiser": variables, "timing": variables[, "text_projection": variables]}
    opt: Any
    ema: Any      # EMA of params["denoiser"] (None without one; in host memory with training.ema.place=host)
    rng: jax.Array


@flax.struct.dataclass
class DiffusionTraining:
    """Static parts of a run: the conditioned model, optimiser, resolved config and the batch geometry."""

    model: ConditionedDenoiser | SA3Conditioned = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    config: Any = flax.struct.field(pytree_node=False)   # conditioning widths resolved (store.resolve_conditioning)
    text_length: int = flax.struct.field(pytree_node=False)
    text_dim: int = flax.struct.field(pytree_node=False)
    lora: lora.LoraSpec | None = flax.struct.field(pytree_node=False, default=None)

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
    adapters = config.training.get("lora")
    spec = lora.LoraSpec.from_config(adapters) if adapters and int(adapters.get("rank", 0)) else None
    if config.model.type == SA3_TYPE:
        model = sa3_model(config, text_dim)
        return DiffusionTraining(model, make_optimizer(config.training.optimizer), config, int(text_length),
                                 int(text_dim), spec)
    resolved = resolve_conditioning(config, text_dim, text_length)
    return DiffusionTraining(diffusion_model_from_config(resolved), make_optimizer(config.training.optimizer),
                             resolved, int(text_length), int(text_dim), spec)


def sa3_model(config, text_dim: int) -> SA3Conditioned:
    """An SA3 config's DiT and conditioner (configs/sa3.py); the data's text features must be its width."""
    if int(config.conditioning.text_dim) != int(text_dim):
        raise ValueError(f"the text features are {text_dim} wide but the SA3 config's conditioning.text_dim is "
                         f"{config.conditioning.text_dim} (SA3 reads its text encoder's states unprojected)")
    if config.diffusion.objective != "rectified_flow":
        raise ValueError(f"config.diffusion.objective is {config.diffusion.objective!r}; `train` on an SA3 model "
                         "trains rectified flow (a \"-base\" model); `train-arc` post-trains one")
    denoiser = denoiser_from_config(config, jnp.dtype(config.get("dtype", "float32")))
    return SA3Conditioned(denoiser.dit, denoiser.conditioner)


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


def _boxed_params(run: DiffusionTraining, rng: jax.Array) -> dict:
    batch = example_batch(run)
    return run.model.init(rng, batch["latents"], batch["text_embeddings"], batch["text_mask"])


def _boxed_state(run: DiffusionTraining, rng: jax.Array) -> DiffusionTrainState:
    init_key, state_key = jax.random.split(rng)
    params = _boxed_params(run, init_key)
    if run.lora is not None:  # fresh adapters (B = 0) on the shapes of a base model
        params = {lora.LORA: new_adapters(run, nn.unbox(params), init_key)[lora.LORA]}
    return DiffusionTrainState(step=jnp.zeros((), jnp.int32), params=params, opt=run.tx.init(params),
                               ema=ema_start(averaged_part(run, params), ema_place(run.config.training.ema)),
                               rng=state_key)


def new_adapters(run: DiffusionTraining, base: dict, rng: jax.Array) -> dict:
    """The run's LoRA adapters for a model with parameters ``base`` (``{"lora": ..., "lora_scale": ...}``)."""
    batch = example_batch(run)
    cond = condition(run, base, batch)

    def apply(variables, *, mutable, rngs):
        t = jnp.zeros(batch["latents"].shape[:1])
        return run.denoiser.apply(variables, batch["latents"], t, **cond, mutable=mutable, rngs=rngs)
    return lora.create(apply, base["denoiser"], run.lora, rng)


def averaged_part(run: DiffusionTraining, params: dict) -> Any:
    """What the EMA follows: the denoiser's weights, or the adapters of a LoRA run."""
    return params["denoiser"] if run.lora is None else params[lora.LORA]


def model_params(run: DiffusionTraining, params: dict, base: dict | None) -> dict:
    """The conditioned model's parameters: the trained ones, or the frozen base with the trained adapters."""
    if run.lora is None:
        return params
    scales = lora.scales_for(params[lora.LORA], run.lora.scale)
    return dict(base, denoiser={**base["denoiser"], lora.LORA: params[lora.LORA], lora.LORA_SCALE: scales})


def from_weights(run: DiffusionTraining, state: DiffusionTrainState, params: Any) -> DiffusionTrainState:
    """A fresh run's state around given weights (``--init-from``): new optimiser moments, the EMA starts at them."""
    return state.replace(params=params, opt=run.tx.init(params),
                         ema=ema_start(averaged_part(run, params), ema_place(run.config.training.ema)))


def abstract_state(run: DiffusionTraining) -> Any:
    return nn.unbox(jax.eval_shape(lambda k: _boxed_state(run, k), jax.random.key(0)))


def abstract_base(run: DiffusionTraining) -> Any:
    """Shapes of a LoRA run's frozen base parameters (None for a full fine-tune)."""
    return None if run.lora is None else nn.unbox(jax.eval_shape(lambda k: _boxed_params(run, k), jax.random.key(0)))


def base_shardings(run: DiffusionTraining, mesh, rules) -> Any:
    if run.lora is None:
        return None
    return param_shardings(jax.eval_shape(lambda k: _boxed_params(run, k), jax.random.key(0)), mesh, rules)


def state_shardings(run: DiffusionTraining, mesh, rules) -> Any:
    shardings = param_shardings(jax.eval_shape(lambda k: _boxed_state(run, k), jax.random.key(0)), mesh, rules)
    return shardings.replace(ema=ema_shardings(shardings.ema, ema_place(run.config.training.ema)))


def loss_fn(run: DiffusionTraining, params, batch: dict, rng: jax.Array, base: dict | None = None):
    t = run.config.training
    if run.kind == SA3Conditioned.kind:
        params = model_params(run, params, base)
        with lora.dropout(run.lora.dropout if run.lora else 0.0):
            loss, metrics = sa3_steps.trainer_loss(run.model, params, batch, rng, t,
                                                   {lora.LORA_RNG: jax.random.fold_in(rng, 2)} if run.lora else None)
        return loss, {"loss": loss, **{f"sa3/{k}": v for k, v in metrics.items() if k != "loss"}}
    noise_rng, drop_rng = jax.random.split(rng)
    noisy = noisy_example(noise_rng, batch["latents"].astype(jnp.float32), run.config.diffusion.objective,
                          t.timestep_sampler)
    params = model_params(run, params, base)
    cond = condition(run, params, batch)
    with lora.dropout(run.lora.dropout if run.lora else 0.0):
        prediction = run.model.predict(params, noisy.x_t, noisy.t, cond, drop_rng, t.cfg_dropout,
                                       rngs={lora.LORA_RNG: jax.random.fold_in(rng, 2)} if run.lora else None)
    loss = diffusion_loss(prediction, noisy.target, batch["padding_mask"] if t.mask_padding else None)
    return loss, {"loss": loss}


def train_step(run: DiffusionTraining, state: DiffusionTrainState, batch: dict, base: dict | None = None):
    t = run.config.training
    rng, step_rng = jax.random.split(state.rng)
    grads, metrics = accumulate(lambda p, b, r: loss_fn(run, p, b, r, base), state.params, batch, step_rng,
                                t.accumulation)
    n = state.step + 1
    e = t.ema
    decay = ema_decay(n, e.beta, e.power, e.get("inv_gamma", 1.0), 0.0, e.update_after_step)
    # before the optimiser step, as the reference
    ema = ema_step(state.ema, averaged_part(run, state.params), decay, ema_place(e))
    updates, opt = run.tx.update(grads, state.opt, state.params)
    metrics = dict(metrics, grad_norm=optax.global_norm(grads), lr=learning_rate(t.optimizer, state.step),
                   finite=jnp.isfinite(metrics["loss"]))
    return state.replace(step=n, params=optax.apply_updates(state.params, updates), opt=opt, ema=ema,
                         rng=rng), metrics


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(tuple(a for a in BATCH_AXES if a in mesh.shape)))


def abstract_batch(run, global_batch: int, mesh) -> dict:
    """Shapes and shardings of a global batch of ``run``'s training data (ahead-of-time lowering)."""
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=batch_sharding(mesh)),
                                  jax.eval_shape(lambda: example_batch(run, global_batch)))


@dataclasses.dataclass(frozen=True)
class CompiledDiffusionTraining:
    run: DiffusionTraining
    abstract: Any
    shardings: Any
    init: Any
    step: Any
    lower: Any  # lower(global_batch) -> the step lowered for abstract inputs (ahead-of-time analysis, benchmarks)
    start_from: Any  # start_from(fresh state, params) -> the state of a run initialised from those weights
    abstract_base: Any = None   # a LoRA run's frozen base parameters (the step's third argument): shapes
    base_shardings: Any = None  # ... and shardings


_LOOP_KEYS = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "demo", "data", "init_from",
              "check_memory", "device_memory_gib")


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

    def step(state, batch, base=None):
        with nn.logical_axis_rules(rules):
            return train_step(run, state, batch, base)

    base = base_shardings(run, mesh, rules)  # a LoRA run's step takes the frozen base as a third argument
    step = jax.jit(step, in_shardings=(shardings, batch_sharding(mesh)) + (() if base is None else (base,)),
                   out_shardings=(shardings, None), donate_argnums=0)
    start_from = jax.jit(functools.partial(from_weights, run), in_shardings=(shardings, shardings.params),
                         out_shardings=shardings, donate_argnums=0)
    abstract, frozen_abstract = abstract_state(run), abstract_base(run)

    def lower(global_batch: int):
        batch = abstract_batch(run, global_batch, mesh)
        frozen = () if base is None else (abstract_with_shardings(frozen_abstract, base),)
        return step.lower(abstract_with_shardings(abstract, shardings), batch, *frozen)

    return CompiledDiffusionTraining(run, abstract, shardings, in_mesh(init, mesh, rules), in_mesh(step, mesh, rules),
                                     in_mesh(lower, mesh, rules), in_mesh(start_from, mesh, rules),
                                     frozen_abstract, base)
