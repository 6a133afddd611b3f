"""Meshes, logical sharding rules, sharded init, and the VAE forward on a (data=2, fsdp=4) mesh."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import model_config, randomize_snake
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.models.autoencoder import vae_from_config
from stableaudio_jax.parallel.mesh import make_mesh, resolve_mesh_shape
from stableaudio_jax.parallel.sharding import DEFAULT_RULES, fit_spec, init_sharded, logical_sharding, param_shardings


def test_mesh_shape_fill_and_errors():
    assert resolve_mesh_shape({"data": -1, "fsdp": 4}, 8) == (2, 4, 1)
    assert resolve_mesh_shape((1, -1, 2), 8) == (1, 4, 2)
    with pytest.raises(ValueError, match=r"needs 6 devices; 8 are available"):
        resolve_mesh_shape({"data": 2, "fsdp": 3}, 8)
    with pytest.raises(ValueError, match=r"at most one -1"):
        resolve_mesh_shape({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match=r"unknown axes \['model'\]"):
        resolve_mesh_shape({"model": 8}, 8)
    with pytest.raises(ValueError, match=r"not divisible by the fixed axes' product 3"):
        resolve_mesh_shape({"data": -1, "fsdp": 3}, 8)
    mesh = make_mesh(load_config("configs/vae.py:tiny").mesh)
    assert dict(mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert mesh.axis_types == (AxisType.Auto,) * 3


def test_fit_spec_replicates_what_does_not_divide():
    mesh_shape = {"data": 2, "fsdp": 4, "tensor": 1}
    assert fit_spec(P(("data", "fsdp"), None), (8, 3), mesh_shape) == P(("data", "fsdp"), None)
    assert fit_spec(P(("data", "fsdp"), None), (2, 3), mesh_shape) == P("data", None)
    assert fit_spec(P(None, "fsdp"), (5, 2), mesh_shape) == P(None, None)
    mesh = make_mesh({"data": 2, "fsdp": 4})
    sharding = logical_sharding(("conv_kernel", "conv_in", "conv_out"), (7, 2, 16), mesh, DEFAULT_RULES)
    assert sharding.spec == P(None, None, "fsdp")


@pytest.fixture(scope="module")
def tiny_vae():
    vae = vae_from_config(load_config("configs/vae.py:tiny").model)
    audio = jax.random.normal(jax.random.key(0), (8, 16 * vae.downsampling_ratio, 2))
    return vae, audio


def test_vae_parameter_shardings_golden(tiny_vae):
    """Every VAE parameter's PartitionSpec under the default rules on a (data=2, fsdp=4) mesh."""
    vae, audio = tiny_vae
    mesh = make_mesh({"data": 2, "fsdp": 4})
    abstract = jax.eval_shape(lambda a: vae.init(jax.random.key(0), a, sample=False), audio[:1])
    specs = {"/".join(str(k.key) for k in path): s.spec for path, s in
             jax.tree_util.tree_flatten_with_path(param_shardings(abstract, mesh, DEFAULT_RULES))[0]}
    conv = {"weight_v": P(None, None, "fsdp"), "weight_g": P("fsdp"), "bias": P("fsdp")}
    snake = {"alpha": P(None), "beta": P(None)}
    expected = {}

    def add(prefix, table):
        expected.update({f"params/{prefix}/{k}": v for k, v in table.items()})

    def residuals(prefix):
        for j in range(3):
            add(f"{prefix}/res_{j}/act_0", snake), add(f"{prefix}/res_{j}/conv_0", conv)
            add(f"{prefix}/res_{j}/act_1", snake), add(f"{prefix}/res_{j}/conv_1", conv)

    add("encoder/conv_in", conv)
    for i in range(2):
        residuals(f"encoder/blocks_{i}")
        add(f"encoder/blocks_{i}/act", snake), add(f"encoder/blocks_{i}/conv", conv)
    add("encoder/act_out", snake), add("encoder/conv_out", conv)  # 8 channels: divisible by 4
    add("decoder/conv_in", conv)
    for i in range(2):
        add(f"decoder/blocks_{i}/act", snake)
        # a transposed conv's g is per *input* channel (conv_in): replicated under these rules
        add(f"decoder/blocks_{i}/conv_t", dict(conv, weight_g=P(None)))
        residuals(f"decoder/blocks_{i}")
    add("decoder/act_out", snake)
    add("decoder/conv_out", {"weight_v": P(None, None, None), "weight_g": P(None)})  # 2 audio channels
    assert specs == expected


def test_vae_forward_on_data2_fsdp4_mesh_equals_single_device(tiny_vae):
    vae, audio = tiny_vae
    init = jax.jit(lambda k, a: nn.unbox(vae.init(k, a, sample=False)))
    params = randomize_snake(init(jax.random.key(1), audio[:1]))

    def forward(p, a):
        out = vae.apply(p, a, sample=False)
        return out.reconstruction, out.latents, out.posterior.kl()

    single = jax.jit(forward)(params, audio)

    mesh = make_mesh({"data": 2, "fsdp": 4})
    abstract = jax.eval_shape(lambda a: vae.init(jax.random.key(0), a, sample=False), audio[:1])
    p_shard = param_shardings(abstract, mesh, DEFAULT_RULES)
    batch = NamedSharding(mesh, P(("data", "fsdp")))
    sharded_params = jax.device_put(params, p_shard)
    sharded_audio = jax.device_put(audio, batch)
    conv_v = sharded_params["params"]["decoder"]["blocks_0"]["conv_t"]["weight_v"]
    assert conv_v.addressable_shards[0].data.shape[-1] == conv_v.shape[-1] // 4  # really sharded over fsdp
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        step = jax.jit(forward, in_shardings=(p_shard, batch), out_shardings=(batch, batch, None))
        recon, latents, kl = step(sharded_params, sharded_audio)
    assert recon.sharding.spec == P(("data", "fsdp"))
    np.testing.assert_allclose(recon, single[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(latents, single[1], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(kl, single[2], rtol=1e-5)


def test_init_sharded_matches_plain_init(tiny_vae):
    vae, audio = tiny_vae
    mesh = make_mesh({"data": 2, "fsdp": 4})
    variables, shardings = init_sharded(vae, jax.random.key(3), audio[:1], mesh=mesh, rules=DEFAULT_RULES,
                                       sample=False)
    plain = jax.jit(lambda k, a: nn.unbox(vae.init(k, a, sample=False)))(jax.random.key(3), audio[:1])
    v = variables["params"]["encoder"]["conv_out"]["weight_v"]
    assert v.sharding == shardings["params"]["encoder"]["conv_out"]["weight_v"]
    assert v.sharding.spec == P(None, None, "fsdp")
    # the same random draws; weight_g (a norm) may differ in the last ulp from the sharded reduction order
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6),
                           variables, plain)


def _logical_names(module, *args, **kwargs):
    boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    return {name for leaf in leaves for name in leaf.names}


def test_every_logical_name_has_a_rule():
    from stableaudio_jax.models.conditioning import LearnedNullEmbedding, TextProjection, TimingConditioner
    from stableaudio_jax.models.t5 import T5Encoder
    vae = vae_from_config(load_config("configs/vae.py:tiny").model)
    names = _logical_names(vae, jnp.zeros((1, 8, 2)), sample=False)
    names |= _logical_names(T5Encoder(**load_config("configs/t5.py:tiny").model), jnp.zeros((1, 4), jnp.int32),
                            jnp.ones((1, 4), bool))
    names |= _logical_names(TimingConditioner(features=8), jnp.zeros(1), jnp.zeros(1))
    names |= _logical_names(TimingConditioner(features=8, style="int"), jnp.zeros(1), jnp.zeros(1))
    names |= _logical_names(LearnedNullEmbedding(4, 8), 1, 4)
    names |= _logical_names(TextProjection(8), jnp.zeros((1, 4, 16)))
    from stableaudio_jax.models.dit import dit_from_config
    from stableaudio_jax.models.unet import unet_from_config
    dit = dit_from_config(dict(model_config("configs/dit.py:tiny"), scan_layers=True))
    names |= _logical_names(dit, jnp.zeros((1, 2, 4)), jnp.zeros(1), jnp.zeros((1, 3, 32)), jnp.zeros((1, 64)))
    unet = unet_from_config(model_config("configs/unet.py:tiny"))
    names |= _logical_names(unet, jnp.zeros((1, 16, 8)), jnp.zeros(1), jnp.zeros((1, 3, 32)))
    from stableaudio_jax.models.discriminator import MultiScaleSTFTDiscriminator
    names |= _logical_names(MultiScaleSTFTDiscriminator((64,), (16,), None, 4), jnp.zeros((1, 256, 2)))
    from stableaudio_jax.models.sa3_conditioning import SA3Conditioner
    from stableaudio_jax.models.sa3_dit import sa3_dit_from_config
    sa3 = sa3_dit_from_config(dict(load_config("configs/sa3.py:tiny").model, scan_layers=True))
    names |= _logical_names(sa3, jnp.zeros((1, 2, 8)), jnp.zeros(1), jnp.zeros((1, 3, 16)), jnp.zeros((1, 16)))
    names |= _logical_names(SA3Conditioner(16), jnp.zeros((1, 3, 16)), jnp.ones((1, 3), bool), jnp.zeros(1))
    names |= {"batch", "length", "channels", "act_embed", "act_heads", "act_kv", "act_mlp"}  # activations
    assert names == {name for name, _ in DEFAULT_RULES}


def test_t5_on_data_fsdp_tensor_mesh_equals_single_device():
    from stableaudio_jax.models.t5 import T5Encoder
    t5 = T5Encoder(**load_config("configs/t5.py:tiny").model)
    ids = jax.random.randint(jax.random.key(0), (4, 12), 3, 500)
    mask = jnp.arange(12)[None] < jnp.array([[12], [5], [9], [1]])
    params = jax.jit(lambda k: nn.unbox(t5.init(k, ids, mask)))(jax.random.key(1))
    single = jax.jit(t5.apply)(params, ids, mask)
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    abstract = jax.eval_shape(lambda: t5.init(jax.random.key(1), ids, mask))
    p_shard = param_shardings(abstract, mesh, DEFAULT_RULES)
    q = p_shard["params"]["blocks_0"]["attn"]["q"]["kernel"]
    assert q.spec == P("fsdp", "tensor", None)  # heads split over tensor, model dim over fsdp
    batch = NamedSharding(mesh, P(("data", "fsdp")))
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        out = jax.jit(t5.apply, in_shardings=(p_shard, batch, batch), out_shardings=batch)(
            jax.device_put(params, p_shard), jax.device_put(ids, batch), jax.device_put(mask, batch))
    np.testing.assert_allclose(out, single, atol=1e-5, rtol=1e-5)


def test_ffts_run_on_each_devices_own_rows():
    """The STFT under a (data=2, fsdp=4) mesh: the same values and gradients as on one device, and no all-gather
    (XLA alone gathers an FFT's whole batch to every device and computes every row there)."""
    from stableaudio_jax.audio.spectral import stft
    from stableaudio_jax.parallel.sharding import on_own_rows
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 256)), jnp.float32)
    loss = lambda a: jnp.sum(jnp.abs(stft(a, 64, 16)) ** 2)  # noqa: E731
    expected, expected_grad = jax.value_and_grad(loss)(x)
    mesh = make_mesh({"data": 2, "fsdp": 4})
    rows = NamedSharding(mesh, P(("data", "fsdp")))
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        step = jax.jit(jax.value_and_grad(loss), in_shardings=rows, out_shardings=(None, rows))
        value, grad = step(jax.device_put(x, rows))
        text = step.lower(x).compile().as_text()
        assert on_own_rows(lambda a: a + 1, jnp.ones(3)).shape == (3,)  # 3 rows do not split 8 ways: runs whole
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-4)
    assert " all-gather(" not in text and "all-gather-start" not in text


def test_every_chip_figure_names_its_published_source():
    """A chip's peak and HBM bandwidth are the ones its cited page gives (a figure changed without its source, or
    a chip added without one, fails here)."""
    from stableaudio_jax.parallel.hardware import GPU_CHIPS, SOURCES, TPU_CHIPS
    chips = {**TPU_CHIPS, **GPU_CHIPS}
    assert set(SOURCES) == set(chips)
    for name, chip in chips.items():
        source = SOURCES[name]
        assert source.startswith("https://"), name
        assert f"{chip.peak_bf16_flops / 1e12:g} TFLOP" in source, (name, source)
        bandwidth = chip.hbm_bandwidth / 1e9
        assert f"{bandwidth:g} GB" in source or f"{bandwidth / 1e3:g} TB/s" in source or \
            f"{bandwidth:.0f} GB" in source or "(1640e9 above" in source, (name, source)
