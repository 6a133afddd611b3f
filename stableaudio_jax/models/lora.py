"""Low-rank adapters (LoRA) on the denoisers' linear layers, selected by name patterns.

A layer ``y = x W`` (``layers.DenseGeneral``: the DiT's and the U-Net's attention q/k/v/out projections and MLPs)
whose path matches one of the patterns gets ``y = x W + scale * dropout(x) A B`` with ``A [in, rank]`` (uniform
in +-1/sqrt(in), as PEFT's Kaiming init) and ``B [rank, out]`` (zeros: a fresh adapter changes nothing) and
``scale = alpha / rank``. Kernels are flattened to ``[in, out]`` over their input / output axes (a fused q/k/v
kernel ``[D, 3, H, d]`` is one ``[D, 3 H d]`` map). The adapters live in their own variable collections next to
the frozen ``params`` — ``lora`` (``a``, ``b``: what is trained) and ``lora_scale`` (``scale``: fixed) — so a
scanned DiT stacks them per layer as it stacks its weights, and the base weights are never touched.

``create`` adds adapters to a model's variables; ``merge`` folds them into the kernels (``W + scale A B``), the
form to export or serve at full speed; ``apply_scale`` multiplies an adapter's effect (``generate --lora P:0.5``).

DoRA (``kind``: ``dora-rows`` / ``dora-cols``, Stable Audio 3's adapter types of those names) adds a trained
magnitude ``m`` and uses ``W' = m * (W + scale A B) / ||W + scale A B||``, the norm per output feature (rows of the
reference's ``[out, in]`` weight; ``m [1, out]``) or per input feature (its columns; ``m [in, 1]``). ``m`` starts at the
base kernel's norms, so a fresh DoRA adapter changes nothing either. A DoRA layer computes ``x (W' - W)`` beside
``x W`` (one more matmul per adapted layer); adapter dropout is a LoRA option only.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import re
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LORA, LORA_SCALE, LORA_RNG = "lora", "lora_scale", "lora_dropout"
COLLECTIONS = (LORA, LORA_SCALE)
# attention q/k/v/out of the DiT (self_attn/qkv, cross_attn/q, cross_attn/kv, */out), of the SA3 DiT (the same with
# a to_ prefix) and of the U-Net
ATTENTION = (r"attn\w*/(to_)?(qkv|q|kv|out)$",)
ATTENTION_AND_MLP = ATTENTION + (r"ff/(proj|out)$", r"ff_(in|out)$")  # DiT SwiGLU, U-Net GELU MLP
WITH_CONVS = ATTENTION_AND_MLP + (r"conv\w*$",)  # + convolutions (U-Net conv1/conv2, down_i_conv, up_i_conv)
# every linear layer and convolution the model has: Stable Audio 3's train_lora.py default (its add_lora adapts
# every Linear and Conv1d when no include / exclude is given)
EVERY_LAYER = (r".",)
TARGET_SETS = {"attention": ATTENTION, "attention+mlp": ATTENTION_AND_MLP, "attention+mlp+conv": WITH_CONVS,
               "all": EVERY_LAYER}
KINDS = ("lora", "dora-rows", "dora-cols")
NORM_AXIS = {"dora-rows": -2, "dora-cols": -1}  # of a kernel [..., in, out]: per output / per input feature

_creating: contextvars.ContextVar[LoraSpec | None] = contextvars.ContextVar("lora_creating", default=None)
_dropout: contextvars.ContextVar[float] = contextvars.ContextVar("lora_dropout", default=0.0)


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    targets: tuple[str, ...] = ATTENTION   # regular expressions searched in a layer's path ("blocks/self_attn/qkv")
    dropout: float = 0.0
    kind: str = "lora"                     # or "dora-rows" / "dora-cols" (a trained magnitude, see above)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"adapter kind {self.kind!r}: expected one of {KINDS}")
        if self.kind != "lora" and float(self.dropout):
            raise ValueError(f"adapter dropout {self.dropout} with kind {self.kind!r}: dropout is a LoRA option")
        if int(self.rank) < 1:
            raise ValueError(f"LoRA rank {self.rank!r}: expected a positive integer")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"LoRA dropout {self.dropout!r}: expected a probability in [0, 1)")
        for pattern in self.targets:
            re.compile(pattern)

    @classmethod
    def from_config(cls, cfg: Any) -> LoraSpec:
        targets = cfg.get("targets", "attention")
        if isinstance(targets, str):
            targets = TARGET_SETS.get(targets, (targets,))
        return cls(int(cfg["rank"]), float(cfg.get("alpha", cfg["rank"])), tuple(targets),
                   float(cfg.get("dropout", 0.0)), str(cfg.get("kind", "lora")))

    def selects(self, path: str) -> bool:
        return any(re.search(pattern, path) for pattern in self.targets)

    @property
    def scale(self) -> float:
        return float(self.alpha) / int(self.rank)

    def as_dict(self) -> dict:
        return {"rank": int(self.rank), "alpha": float(self.alpha), "targets": list(self.targets),
                "dropout": float(self.dropout), "kind": self.kind}


@contextlib.contextmanager
def dropout(rate: float) -> Iterator[None]:
    """Adapter-input dropout while tracing a training step (needs a ``lora_dropout`` rng in the apply call)."""
    token = _dropout.set(float(rate))
    try:
        yield
    finally:
        _dropout.reset(token)


def adapted(module: nn.Module, x: jax.Array, y: jax.Array, kernel: jax.Array | None = None) -> jax.Array:
    """``y`` plus the layer's adapter term (``x``: the layer's input flattened to ``[..., in]``; ``kernel``: the
    layer's kernel as ``[in, out]``, which DoRA needs); creates the adapter while :func:`create` runs and the layer
    is selected."""
    _maybe_create(module, x.shape[-1], int(np.prod(y.shape[x.ndim - 1:])), kernel)
    if not module.has_variable(LORA, "a"):
        return y
    a, b = module.get_variable(LORA, "a"), module.get_variable(LORA, "b")
    if module.has_variable(LORA, "m"):
        scale = module.get_variable(LORA_SCALE, "scale")
        delta = dora_kernel(kernel, a, b, scale, module.get_variable(LORA, "m")) - kernel.astype(jnp.float32)
        return y + (x @ delta.astype(x.dtype)).reshape(y.shape).astype(y.dtype)
    h, rate = x, _dropout.get()
    if rate > 0 and module.has_rng(LORA_RNG):
        keep = jax.random.bernoulli(module.make_rng(LORA_RNG), 1.0 - rate, h.shape)
        h = jnp.where(keep, h / (1.0 - rate), 0.0).astype(h.dtype)
    scale = module.get_variable(LORA_SCALE, "scale")
    delta = (h @ a.astype(h.dtype)) @ (b * scale).astype(h.dtype)
    return y + delta.reshape(y.shape).astype(y.dtype)


def adapted_kernel(module: nn.Module, kernel: jax.Array) -> jax.Array:
    """A convolution's kernel ``[k, in, out]`` plus its adapter's ``scale * A B`` reshaped to it (``A [k in, r]``):
    the adapter is applied in kernel form, so adapter dropout does not apply to convolutions."""
    _maybe_create(module, int(np.prod(kernel.shape[:-1])), kernel.shape[-1])
    if not module.has_variable(LORA, "a"):
        return kernel
    a, b = module.get_variable(LORA, "a"), module.get_variable(LORA, "b")
    delta = (a @ b) * module.get_variable(LORA_SCALE, "scale")
    return (kernel.astype(jnp.float32) + delta.reshape(kernel.shape)).astype(kernel.dtype)


def dora_kernel(kernel: jax.Array, a: jax.Array, b: jax.Array, scale: jax.Array, m: jax.Array) -> jax.Array:
    """``m * (W + scale A B) / ||W + scale A B||`` for ``kernel [..., in, out]`` (float32). ``m`` is kept in the
    norm's keepdims shape, which says which norm: ``[..., 1, out]`` per output feature (rows), ``[..., in, 1]`` per
    input feature (columns)."""
    w = kernel.astype(jnp.float32).reshape(*a.shape[:-1], b.shape[-1])
    w = w + jnp.einsum("...ir,...ro->...io", a, b) * jnp.asarray(scale)[..., None, None]
    axis = -2 if m.shape[-2] == 1 else -1
    return m * w / (_norm(w, axis) + 1e-12)


def _norm(w: jax.Array, axis: int) -> jax.Array:
    """``||w||`` along ``axis`` (keepdims) with a zero gradient where the norm is zero, as torch's norm has: the
    plain ``sqrt`` gives NaN there, and a zero row (a zero-initialised layer of the base, say) would make every
    DoRA update NaN."""
    squares = jnp.sum(w * w, axis=axis, keepdims=True)
    positive = squares > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


def _maybe_create(module: nn.Module, fan_in: int, fan_out: int, kernel: jax.Array | None = None) -> None:
    """Creates the layer's adapter while :func:`create` runs and the layer is selected."""
    spec = _creating.get()
    if spec is None or not module.is_mutable_collection(LORA) or not spec.selects("/".join(module.path)):
        return
    bound = 1.0 / np.sqrt(fan_in)
    module.variable(LORA, "a", lambda: jax.random.uniform(module.make_rng("params"), (fan_in, spec.rank),
                                                          jnp.float32, -bound, bound))
    module.variable(LORA, "b", lambda: jnp.zeros((spec.rank, fan_out), jnp.float32))
    module.variable(LORA_SCALE, "scale", lambda: jnp.asarray(spec.scale, jnp.float32))
    if spec.kind != "lora":
        if kernel is None:
            raise ValueError(f"{'/'.join(module.path)}: {spec.kind} needs the layer's kernel (a linear layer); "
                             "convolutions take LoRA only")
        flat = kernel.astype(jnp.float32).reshape(fan_in, fan_out)
        module.variable(LORA, "m", lambda: jnp.linalg.norm(flat, axis=NORM_AXIS[spec.kind], keepdims=True))


def create(apply_fn, variables: dict, spec: LoraSpec, rng: jax.Array, *args, **kwargs) -> dict:
    """The adapters of ``spec`` for a model: ``apply_fn(variables, *args, mutable=..., rngs=...)`` runs once on
    example inputs and returns ``{"lora": ..., "lora_scale": ...}``. Raises when no layer matches."""
    token = _creating.set(spec)
    try:
        _, new = apply_fn(variables, *args, mutable=list(COLLECTIONS), rngs={"params": rng}, **kwargs)
    finally:
        _creating.reset(token)
    new = {k: v for k, v in new.items() if k in COLLECTIONS}
    if not new.get(LORA):
        raise ValueError(f"LoRA targets {list(spec.targets)} match no linear layer of the model; its layers are "
                         f"{linear_layers(variables)[:12]} ...")
    return jax.tree_util.tree_map(jnp.asarray, nn.unbox(new))


def linear_layers(variables: dict) -> list[str]:
    """The paths of the model's kernels (what target patterns are matched against)."""
    flat = jax.tree_util.tree_flatten_with_path(nn.unbox(variables.get("params", {})))[0]
    return ["/".join(str(getattr(k, "key", k)) for k in path[:-1]) for path, _ in flat
            if str(getattr(path[-1], "key", "")) == "kernel"]


def adapter_paths(adapters: dict) -> list[str]:
    flat = jax.tree_util.tree_flatten_with_path(adapters[LORA])[0]
    return sorted({"/".join(str(getattr(k, "key", k)) for k in path[:-1]) for path, _ in flat})


def _node(tree: dict, path: Sequence[str]) -> dict:
    for key in path:
        tree = tree[key]
    return tree


def check_fits(adapters: dict, variables: dict, source: str = "the adapter") -> None:
    """Every adapter must sit on a kernel of the base model with matching in / out sizes (else: the layers)."""
    params = nn.unbox(variables["params"])
    missing, mismatched = [], []
    for path in adapter_paths(adapters):
        keys = path.split("/")
        try:
            kernel = _node(params, keys)["kernel"]
        except (KeyError, TypeError):
            missing.append(path)
            continue
        a, b = _node(adapters[LORA], keys)["a"], _node(adapters[LORA], keys)["b"]
        lead = a.ndim - 2
        if (tuple(kernel.shape[:lead]) != tuple(a.shape[:lead])
                or int(np.prod(kernel.shape[lead:])) != a.shape[-2] * b.shape[-1]):
            mismatched.append(f"{path}: kernel {tuple(kernel.shape)}, adapter {tuple(a.shape)} x {tuple(b.shape)}")
    if missing or mismatched:
        raise ValueError(f"{source} does not fit this base model: layers it adapts that the model lacks: "
                         f"{missing[:8]}; mismatched sizes: {mismatched[:8]}")


def merge(variables: dict, adapters: dict) -> dict:
    """The base variables with every adapter folded into its kernel, ``W + scale A B`` (exact up to float
    rounding); the result has no adapter collections."""
    params = jax.tree_util.tree_map(lambda x: x, nn.unbox(variables["params"]))  # a copy of the containers
    for path in adapter_paths(adapters):
        keys = path.split("/")
        node, lora = _node(params, keys), _node(adapters[LORA], keys)
        scale = jnp.asarray(_node(adapters[LORA_SCALE], keys)["scale"], jnp.float32)
        kernel = node["kernel"]
        if "m" in lora:
            merged = dora_kernel(kernel, lora["a"], lora["b"], scale, lora["m"])
            node["kernel"] = merged.reshape(kernel.shape).astype(kernel.dtype)
            continue
        delta = jnp.einsum("...ir,...ro->...io", lora["a"], lora["b"]) * scale[..., None, None]
        node["kernel"] = (kernel.astype(jnp.float32) + delta.reshape(kernel.shape)).astype(kernel.dtype)
    return {**{k: v for k, v in variables.items() if k not in COLLECTIONS}, "params": params}


def with_adapters(variables: dict, adapters: dict) -> dict:
    """The variables a model applies its adapters from (the base's, unmerged)."""
    return {**{k: v for k, v in variables.items() if k not in COLLECTIONS}, **adapters}


def scales_for(adapters: dict, scale: float) -> dict:
    """The ``lora_scale`` collection for an adapter tree (``{"a", "b"}`` leaves): ``scale`` per adapter (and per
    layer of a scanned stack)."""
    return {k: {"scale": jnp.full(v["a"].shape[:-2], scale, jnp.float32)} if "a" in v else scales_for(v, scale)
            for k, v in adapters.items()}


def apply_scale(adapters: dict, factor: float) -> dict:
    """The adapters with their effect multiplied by ``factor`` (0 = the base model)."""
    return {**adapters, LORA_SCALE: jax.tree_util.tree_map(lambda s: s * factor, adapters[LORA_SCALE])}


def combined(adapters: Sequence[dict]) -> dict:
    """Several adapters applied together: on a layer adapted more than once, their ``A`` / ``B`` are concatenated
    along the rank (``x [A1 A2] [s1 B1; s2 B2]`` = the sum of their terms), each scale folded into its ``B``."""
    if len(adapters) == 1:
        return adapters[0]
    if any(is_dora(a) for a in adapters):
        raise ValueError("DoRA adapters do not add up by concatenation (each renormalises the kernel): merge them "
                         "one at a time (store.adapters.apply_adapters does)")
    owned = [set(adapter_paths(a)) for a in adapters]
    lora, scales = {}, {}
    for path in sorted(set().union(*owned)):
        keys = path.split("/")
        parts = [(_node(a[LORA], keys), _node(a[LORA_SCALE], keys)["scale"]) for a, own in zip(adapters, owned)
                 if path in own]
        a = jnp.concatenate([p["a"] for p, _ in parts], axis=-1)
        b = jnp.concatenate([p["b"] * jnp.asarray(s)[..., None, None] for p, s in parts], axis=-2)
        _set(lora, keys, {"a": a, "b": b})
        _set(scales, keys, {"scale": jnp.ones_like(jnp.asarray(parts[0][1]))})
    return {LORA: lora, LORA_SCALE: scales}


def is_dora(adapters: dict) -> bool:
    return any(str(getattr(path[-1], "key", "")) == "m"
               for path, _ in jax.tree_util.tree_flatten_with_path(adapters[LORA])[0])


def _set(tree: dict, keys: Sequence[str], value: Any) -> None:
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value
