"""LoRA adapters on the denoisers' linear layers: a fresh adapter is the identity, merged and unmerged outputs agree,
scanned and unrolled DiTs adapt the same layers, several adapters combine, and a foreign adapter is refused."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import dit_inputs
from stableaudio_jax.models import lora
from stableaudio_jax.models.dit import DiT

SPEC = lora.LoraSpec(rank=4, alpha=8.0)


def _dit(scan: bool) -> DiT:
    return DiT(io_channels=8, embed_dim=64, depth=2, num_heads=2, cond_token_dim=48, global_cond_dim=96,
               timestep_features_dim=32, scan_layers=scan)


def _model(scan: bool, spec=SPEC, seed=0):
    dit = _dit(scan)
    inputs = [jnp.asarray(a) for a in dit_inputs()]
    variables = nn.unbox(dit.init(jax.random.key(seed), *inputs))
    adapters = lora.create(dit.apply, variables, spec, jax.random.key(seed + 1), *inputs)
    return dit, variables, adapters, inputs


def _trained(adapters, seed=2):
    """Adapters with non-zero B (as after training)."""
    leaves, tree = jax.tree_util.tree_flatten(adapters[lora.LORA])
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return {**adapters, lora.LORA: jax.tree_util.tree_unflatten(
        tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])}


@pytest.mark.parametrize("scan", [False, True])
def test_a_fresh_adapter_is_the_identity_and_merging_agrees(scan):
    dit, variables, adapters, inputs = _model(scan)
    base = dit.apply(variables, *inputs)
    np.testing.assert_array_equal(np.asarray(dit.apply(lora.with_adapters(variables, adapters), *inputs)),
                                  np.asarray(base))
    trained = _trained(adapters)
    unmerged = np.asarray(dit.apply(lora.with_adapters(variables, trained), *inputs))
    merged = np.asarray(dit.apply(lora.merge(variables, trained), *inputs))
    assert np.abs(unmerged - np.asarray(base)).max() > 1e-3  # the adapter changes the output
    np.testing.assert_allclose(merged, unmerged, atol=2e-5, rtol=1e-5)
    # the base weights themselves are untouched by merging
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, _model(scan)[1])


def test_attention_layers_are_adapted_with_the_configured_rank_and_scale():
    _, _, unrolled, _ = _model(False)
    paths = lora.adapter_paths(unrolled)
    assert paths == sorted(f"blocks_{i}/{p}" for i in range(2) for p in
                           ("cross_attn/kv", "cross_attn/out", "cross_attn/q", "self_attn/out", "self_attn/qkv"))
    qkv = unrolled[lora.LORA]["blocks_0"]["self_attn"]["qkv"]
    assert qkv["a"].shape == (64, 4) and qkv["b"].shape == (4, 3 * 64) and not np.asarray(qkv["b"]).any()
    assert float(unrolled[lora.LORA_SCALE]["blocks_0"]["self_attn"]["qkv"]["scale"]) == 2.0  # alpha / rank
    _, _, scanned, _ = _model(True)
    assert scanned[lora.LORA]["blocks"]["self_attn"]["qkv"]["a"].shape == (2, 64, 4)  # stacked per layer
    with_mlp = _model(False, lora.LoraSpec.from_config({"rank": 2, "targets": "attention+mlp"}))[2]
    assert {"blocks_0/ff/proj", "blocks_0/ff/out"} <= set(lora.adapter_paths(with_mlp))


def test_scaled_and_combined_adapters():
    dit, variables, adapters, inputs = _model(False)
    one, two = _trained(adapters, 2), _trained(adapters, 3)
    base = np.asarray(dit.apply(variables, *inputs))
    half = np.asarray(dit.apply(lora.with_adapters(variables, lora.apply_scale(one, 0.0)), *inputs))
    np.testing.assert_allclose(half, base, atol=1e-6)  # scale 0 is the base model
    both = np.asarray(dit.apply(lora.with_adapters(variables, lora.combined([one, two])), *inputs))
    sequential = np.asarray(dit.apply(lora.merge(lora.merge(variables, one), two), *inputs))
    np.testing.assert_allclose(both, sequential, atol=2e-5, rtol=1e-5)


def test_a_foreign_adapter_and_bad_specs_are_refused():
    _, variables, _, _ = _model(False)
    _, _, scanned, _ = _model(True)
    with pytest.raises(ValueError, match=r"does not fit this base model: layers it adapts that the model lacks: "
                                         r"\['blocks/cross_attn/kv'"):
        lora.check_fits(scanned, variables, "the adapter")
    wide = _model(False, seed=0)[2]
    wide[lora.LORA]["blocks_0"]["self_attn"]["qkv"]["a"] = jnp.zeros((32, 4))
    with pytest.raises(ValueError, match=r"mismatched sizes: \['blocks_0/self_attn/qkv: kernel \(64, 3, 2, 32\)"):
        lora.check_fits(wide, variables)
    with pytest.raises(ValueError, match=r"match no linear layer of the model; its layers are \["):
        _model(False, lora.LoraSpec(rank=2, alpha=2, targets=("nothing_here",)))
    with pytest.raises(ValueError, match=r"LoRA rank 0: expected a positive integer"):
        lora.LoraSpec(rank=0, alpha=1)


@pytest.fixture(scope="module")
def small_unet():
    """configs/unet.py:tiny cut to two levels (attention at both, as test_store's U-Net): the same layer kinds the
    adapters target, a fraction of the work; initialised once under jit for both target sets."""
    from helpers import model_config
    from stableaudio_jax.models.unet import unet_from_config
    small = ["model.factors=(1,2)", "model.multipliers=(1,1,1)", "model.num_blocks=(1,1)", "model.attentions=(0,1,1)"]
    unet = unet_from_config(model_config("configs/unet.py:tiny", small))
    rng = np.random.default_rng(0)
    inputs = [jnp.asarray(rng.standard_normal((1, 16, unet.in_channels)), jnp.float32), jnp.full((1,), 0.3),
              jnp.asarray(rng.standard_normal((1, 4, unet.context_features)), jnp.float32)]
    variables = nn.unbox(jax.jit(unet.init)(jax.random.key(0), *inputs))
    return unet, variables, inputs


@pytest.mark.parametrize("targets", ["attention", "attention+mlp+conv"])
def test_the_u_net_is_adapted_and_merges_exactly(small_unet, targets):
    unet, variables, inputs = small_unet
    spec = lora.LoraSpec.from_config({"rank": 4, "alpha": 8.0, "targets": targets})
    adapters = lora.create(unet.apply, variables, spec, jax.random.key(1), *inputs)
    paths = lora.adapter_paths(adapters)
    attention = [p for p in paths if p.split("/")[-2:-1] in (["self_attn"], ["cross_attn"])]
    convs = [p for p in paths if p.endswith(("conv1", "conv2", "_conv"))]
    assert attention and (convs if targets.endswith("conv") else attention == paths)
    trained = _trained(adapters)
    apply = jax.jit(unet.apply)
    np.testing.assert_allclose(np.asarray(apply(lora.merge(variables, trained), *inputs)),
                               np.asarray(apply(lora.with_adapters(variables, trained), *inputs)),
                               atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kind, scan", [("dora-rows", False), ("dora-cols", True)])  # both kinds, both layouts
def test_dora_starts_as_the_identity_merges_as_sa3_bakes_it_and_agrees_unmerged(kind, scan):
    """DoRA (Stable Audio 3's dora-rows / dora-cols): a fresh adapter changes nothing (its magnitude is the base
    kernel's norms), the unmerged layers (training) give what the merged kernels give, and a merged kernel is the
    reference's bake of the same A, B and magnitude (convert/sa3_lora.adapted_weight, parity-tested against the
    reference's files in tests/test_sa3_lora.py)."""
    from stableaudio_jax.convert.sa3_lora import adapted_weight
    dit, variables, adapters, inputs = _model(scan, lora.LoraSpec(rank=4, alpha=8.0, kind=kind))
    base = np.asarray(dit.apply(variables, *inputs))
    fresh = np.asarray(dit.apply(lora.with_adapters(variables, adapters), *inputs))
    np.testing.assert_allclose(fresh, base, atol=1e-5)
    trained = _trained(adapters)
    unmerged = np.asarray(dit.apply(lora.with_adapters(variables, trained), *inputs))
    merged_variables = lora.merge(variables, trained)
    assert np.abs(unmerged - base).max() > 1e-3
    np.testing.assert_allclose(np.asarray(dit.apply(merged_variables, *inputs)), unmerged, atol=5e-5, rtol=1e-5)
    blocks = ("blocks",) if scan else ("blocks_0",)
    layer = lambda tree: tree[blocks[0]]["self_attn"]["qkv"]  # noqa: E731
    first = (lambda x: np.asarray(x)[0]) if scan else np.asarray
    adapter, kernel = layer(trained[lora.LORA]), first(layer(variables["params"])["kernel"])
    a, b, m = first(adapter["a"]), first(adapter["b"]), first(adapter["m"])
    assert m.shape == ((1, b.shape[1]) if kind == "dora-rows" else (a.shape[0], 1))
    reference = adapted_weight(kernel.reshape(a.shape[0], -1).T, {"lora_A": a.T, "lora_B": b.T,
                                                                   "magnitude": m.ravel()}, kind, 2.0, 1.0)
    ours = first(layer(merged_variables["params"])["kernel"]).reshape(a.shape[0], -1).T
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="DoRA adapters do not add up"):
        lora.combined([trained, trained])
    from stableaudio_jax.store.adapters import LoraAdapter, apply_adapters
    stored = LoraAdapter(lora.LoraSpec(rank=4, alpha=8.0, kind=kind), trained, {})
    jax.tree_util.tree_map(np.testing.assert_array_equal, apply_adapters(variables, [(stored, 0.0)], None, "test"),
                           variables)  # at strength 0 the base as it is (the reference skips the adapter)
    twice = apply_adapters(variables, [(stored, 1.0), (stored, 1.0)], None, "test")  # merged one after the other
    again = lora.merge(merged_variables, trained)
    np.testing.assert_allclose(np.asarray(layer(twice["params"])["kernel"]),
                               np.asarray(layer(again["params"])["kernel"]), atol=1e-6)
    with pytest.raises(ValueError, match="dropout is a LoRA option"):
        lora.LoraSpec(rank=2, alpha=2.0, dropout=0.1, kind=kind)


def test_dora_on_every_layer_trains_through_zero_initialised_layers():
    """``targets="all"`` (SA3's train_lora.py default) adapts every kernel, the DiT's zero-initialised output
    projections among them: their DoRA gradient is zero where the weight's norm is zero (as torch's norm gives),
    never NaN, which would spread to every adapter."""
    spec = lora.LoraSpec(rank=2, alpha=2.0, targets=lora.TARGET_SETS["all"], kind="dora-rows")
    dit, variables, adapters, inputs = _model(False, spec)
    assert lora.adapter_paths(adapters) == sorted(lora.linear_layers(variables))
    zero = [p for p in lora.linear_layers(variables) if not np.any(_at(variables["params"], p)["kernel"])]
    assert zero  # zero-initialised layers exist and are adapted

    def loss(trained):
        out = dit.apply(lora.with_adapters(variables, {**adapters, lora.LORA: trained}), *inputs)
        return jnp.mean(out ** 2)

    grads = jax.grad(loss)(adapters[lora.LORA])  # the first step: B = 0, so a zero kernel's V is zero too
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
    assert np.abs(_at(grads, "project_out")["b"]).max() > 0  # (a fresh DiT's zero output layers block the rest)


def _at(tree, path: str):
    for key in path.split("/"):
        tree = tree[key]
    return tree
