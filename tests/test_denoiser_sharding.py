"""Sharding of the denoisers: golden PartitionSpecs of every parameter per strategy, and mesh forwards that equal
the single-device result.

The golden file records, for the tiny DiT and U-Net, every parameter's PartitionSpec under the default rules on each
strategy's mesh. A deliberate change to the rules or the models regenerates it with
``STABLEAUDIO_UPDATE_GOLDEN=1 pytest tests/test_denoiser_sharding.py``; review the diff before committing.
"""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import model_config, synthetic_state_dict
from jax.sharding import NamedSharding, PartitionSpec as P

from stableaudio_jax.convert.unet import unet_params_from_state_dict
from stableaudio_jax.models.dit import dit_from_config
from stableaudio_jax.models.unet import unet_from_config
from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.parallel.sharding import DEFAULT_RULES, param_shardings

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "golden_param_specs.json")
STRATEGIES = {"data_parallel": {"data": 8}, "fsdp": {"data": 2, "fsdp": 4}, "tensor_parallel": {"data": 4, "tensor": 2},
              "fsdp_tensor": {"data": 2, "fsdp": 2, "tensor": 2}}


def _dit():
    dit = dit_from_config(model_config("configs/dit.py:tiny"))
    args = (jnp.zeros((4, 8, 4)), jnp.full((4,), 0.5), jnp.ones((4, 6, 32)), jnp.ones((4, 64)))
    return dit, args


def _unet():
    unet = unet_from_config(model_config("configs/unet.py:tiny"))
    args = (jnp.zeros((4, 32, 8)), jnp.full((4,), 0.5), jnp.ones((4, 6, 32)), jnp.ones((4, 6), bool))
    return unet, args


def _params(name, model, args):
    """Random parameters with nothing zero (zero-initialised projections would hide sharding mistakes)."""
    if name == "unet_tiny":  # converted from the reference fixture's weights: no slow random-init compile
        shapes = json.loads(str(np.load(os.path.join(os.path.dirname(GOLDEN), "unet_reference.npz"))["shapes"]))
        return unet_params_from_state_dict(synthetic_state_dict(shapes), model)
    params = jax.jit(lambda k: nn.unbox(model.init(k, *args)))(jax.random.key(1))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [x + 0.05 * jax.random.normal(k, x.shape)
                                                  for x, k in zip(leaves, keys)])


MODELS = {"dit_tiny": _dit, "unet_tiny": _unet}


def _specs(model, args, mesh):
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))
    shardings = param_shardings(abstract, mesh, DEFAULT_RULES)
    return {"/".join(str(k.key) for k in path): str(tuple(s.spec)) for path, s in
            jax.tree_util.tree_flatten_with_path(shardings)[0]}


def test_golden_parameter_specs():
    computed = {name: {strategy: _specs(*build(), make_mesh(shape)) for strategy, shape in STRATEGIES.items()}
                for name, build in MODELS.items()}
    if os.environ.get("STABLEAUDIO_UPDATE_GOLDEN"):
        with open(GOLDEN, "w", encoding="utf-8") as f:
            json.dump(computed, f, indent=1, sort_keys=True)
    with open(GOLDEN, encoding="utf-8") as f:
        golden = json.load(f)
    assert computed == golden
    # what the rules are meant to do, spelled out on a few parameters
    dit = golden["dit_tiny"]
    assert dit["data_parallel"]["params/blocks_0/self_attn/qkv/kernel"] == "(None, None, None, None)"
    assert dit["data_parallel"]["params/blocks_0/ff/out/kernel"] == "(None, None)"
    assert dit["fsdp"]["params/blocks_0/self_attn/qkv/kernel"] == "('fsdp', None, None, None)"
    assert dit["tensor_parallel"]["params/blocks_0/self_attn/qkv/kernel"] == "(None, None, 'tensor', None)"
    assert dit["fsdp_tensor"]["params/blocks_0/ff/proj/kernel"] == "('fsdp', None, 'tensor')"
    assert dit["fsdp_tensor"]["params/blocks_0/ff/out/kernel"] == "('tensor', 'fsdp')"
    unet = golden["unet_tiny"]
    assert unet["fsdp_tensor"]["params/down_1_transformer/blocks_0/cross_attn/q/kernel"] == "('fsdp', 'tensor', None)"
    assert unet["fsdp"]["params/down_1_res_0/conv1/kernel"] == "(None, None, 'fsdp')"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_on_data_fsdp_tensor_mesh_equals_single_device(name):
    model, args = MODELS[name]()
    rng = np.random.default_rng(0)
    args = tuple(jnp.asarray(rng.standard_normal(a.shape).astype(np.float32)) if a.dtype == jnp.float32 else a
                 for a in args)
    args = (args[0], jnp.asarray(rng.uniform(0, 1, 4), jnp.float32)) + args[2:]
    params = _params(name, model, args)
    single = jax.jit(model.apply)(params, *args)
    mesh = make_mesh(STRATEGIES["fsdp_tensor"])
    p_shard = param_shardings(jax.eval_shape(lambda: model.init(jax.random.key(0), *args)), mesh, DEFAULT_RULES)
    batch = NamedSharding(mesh, P(("data", "fsdp")))
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        step = jax.jit(model.apply, in_shardings=(p_shard,) + (batch,) * len(args), out_shardings=batch)
        out = step(jax.device_put(params, p_shard), *(jax.device_put(a, batch) for a in args))
    assert float(jnp.abs(single).max()) > 0.1
    np.testing.assert_allclose(out, single, atol=2e-5 * float(jnp.abs(single).max()), rtol=0)
