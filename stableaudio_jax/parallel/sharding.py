"""Logical axis names → mesh shardings, in one place.

Models name the axes of every parameter (``nn.with_logical_partitioning``) and of their big activations
(:func:`constrain`). A rules table (from the config) maps logical names to the mesh axes
``('data', 'fsdp', 'tensor')``. The strategy is chosen by the *mesh shape*, not by different rules: with
``fsdp=1`` the FSDP rules shard nothing and training is pure data parallel; with ``tensor=1`` there is no tensor
parallelism (the MaxText convention).

A dimension that a mesh axis does not divide (a 2-channel audio conv on a 4-way ``fsdp`` axis, say) is replicated
along that axis instead of failing: :func:`fit_spec` drops the non-dividing mesh axes, per dimension.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# The default rules. Every logical name used by the models appears here, mapped to mesh axes or None
# (tests/test_sharding.py checks that no model uses a name missing from this table).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("channels", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv", None),
    ("act_mlp", "tensor"),
    # convolution parameters: FSDP shards output channels; kernels and input channels stay whole
    ("conv_out", "fsdp"),
    ("conv_in", None),
    ("conv_kernel", None),
    ("conv_kernel_w", None),   # the second spatial axis of 2-D kernels (the discriminator)
    # transformer parameters: FSDP over the model dimension, tensor parallelism over heads and MLP hidden units
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("norm", None),
    ("relpos_buckets", None),
    ("fourier", None),
    ("fourier_out", None),
    ("cond_embed", "fsdp"),    # cross-attention token width (keys/values read from it)
    ("text_embed", None),      # the text encoder's output width, into the conditioner's projection
    ("cond_global", "fsdp"),   # global conditioning input
    ("qkv", None),             # the fused q/k/v (or k/v) selector
    ("glu", None),             # SwiGLU value/gate selector
    ("latent", None),          # latent channels of the DiT's input/output projections
    ("latent_out", None),
    ("layers", None),          # the stacked-layers axis of scanned blocks
    ("memory", None),          # the SA3 DiT's memory tokens
    ("adaln", None),           # the SA3 DiT's six adaLN modulations (scale, shift, gate x 2)
    ("local_cond", None),      # the SA3 DiT's local (inpainting) conditioning channels
)

LogicalRules = Sequence[tuple[str, Any]]


def normalize_rules(rules: Any) -> tuple[tuple[str, Any], ...]:
    """Rules from a config (lists of lists, ConfigDict tuples) → a tuple of (name, mesh axes) pairs."""
    out = []
    for i, rule in enumerate(rules):
        if len(rule) != 2 or not isinstance(rule[0], str):
            raise ValueError(f"sharding rule #{i} is {rule!r}; expected (logical_name, mesh_axis | [mesh_axes] | None)")
        name, axes = rule
        if isinstance(axes, (list, tuple)):
            axes = tuple(axes)
        out.append((name, axes))
    return tuple(out)


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh_shape: Mapping[str, int]) -> PartitionSpec:
    """Drops, per dimension, mesh axes of size 1 (they shard nothing) and then trailing mesh axes whose combined
    size does not divide that dimension."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        if axes is None:
            fitted.append(None)
            continue
        axes = tuple(a for a in ((axes,) if isinstance(axes, str) else axes) if mesh_shape[a] > 1)
        while axes and dim % math.prod(mesh_shape[a] for a in axes) != 0:
            axes = axes[:-1]
        fitted.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*fitted)


def logical_sharding(logical_names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                     rules: LogicalRules) -> NamedSharding:
    """The NamedSharding of an array of ``shape`` whose axes have the given logical names."""
    spec = nn.logical_to_mesh_axes(tuple(logical_names), normalize_rules(rules))
    return NamedSharding(mesh, fit_spec(spec, shape, mesh.shape))


def param_shardings(abstract_variables: Any, mesh: Mesh, rules: LogicalRules) -> Any:
    """Shardings for a (boxed, possibly abstract) variable tree; the result matches ``nn.unbox(tree)``."""
    rules = normalize_rules(rules)
    logical_specs = nn.get_partition_spec(abstract_variables)
    shapes = nn.unbox(abstract_variables)
    return jax.tree_util.tree_map(
        lambda spec, x: NamedSharding(mesh, fit_spec(nn.logical_to_mesh_axes(spec, rules), x.shape, mesh.shape)),
        logical_specs, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))


def constrain(x: jax.Array, logical_names: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation by logical axis names.

    A no-op unless both logical rules (``nn.logical_axis_rules``) and a mesh (``jax.set_mesh``) are active, so the
    models run unchanged on one device and in tests.
    """
    rules = nn.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return x
    spec = nn.logical_to_mesh_axes(tuple(logical_names), normalize_rules(rules))
    return lax.with_sharding_constraint(x, fit_spec(spec, x.shape, mesh.shape))


def on_own_rows(fn, x: jax.Array) -> jax.Array:
    """``fn(x)`` for a row-wise ``fn`` (row i of the result depends on row i of ``x`` only), each device on the rows
    it holds: the leading axis as the logical ``batch`` axis is sharded. For operations XLA's SPMD partitioner does
    not split along the batch: it all-gathers an FFT's operand to every device and has each compute every row (on 8
    data-parallel devices: 8x the FFT work and an all-gather per transform). A no-op without rules and a mesh."""
    rules = nn.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return fn(x)
    rows = fit_spec(nn.logical_to_mesh_axes(("batch",), normalize_rules(rules)), x.shape[:1], mesh.shape)[0]
    if rows is None:
        return fn(x)
    return jax.shard_map(fn, in_specs=PartitionSpec(rows), out_specs=PartitionSpec(rows), check_vma=False)(x)


def init_sharded(module: nn.Module, rng: jax.Array, *example_args, mesh: Mesh, rules: LogicalRules,
                 **init_kwargs) -> tuple[Any, Any]:
    """Initialises ``module`` directly into its shardings (no full copy on one device).

    Shapes come from ``jax.eval_shape`` first, then ``jax.jit(init, out_shardings=...)`` materialises each shard
    where it lives. ``init_kwargs`` go to ``module.init`` (``method=...``, static flags). Returns (unboxed
    variables, their shardings).
    """
    init = functools.partial(module.init, **init_kwargs)
    abstract = jax.eval_shape(init, rng, *example_args)
    shardings = param_shardings(abstract, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(normalize_rules(rules)):
        variables = jax.jit(lambda r, *a: nn.unbox(init(r, *a)), out_shardings=shardings)(rng, *example_args)
    return variables, shardings


def in_mesh(fn, mesh: Mesh, rules: Any):
    """``fn`` called with ``mesh`` set and the logical ``rules`` active (jitted steps trace and run there)."""
    rules = normalize_rules(rules)

    def call(*args):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return fn(*args)

    def lower(*args):  # a jitted ``fn`` lowered for abstract arguments (memory checks ahead of the first step)
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return fn.lower(*args)
    call.lower = lower
    return call
