"""The Flax T5 encoder against transformers' T5EncoderModel (both feed-forward variants), the HF directory loader,
the batch API on a mesh, and t5-base's exact size."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import T5Config, T5EncoderModel, T5ForConditionalGeneration
from transformers.models.t5.modeling_t5 import T5Attention

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.convert import CheckpointMismatchError, load_hf_t5, t5_config_from_hf, t5_params_from_state_dict
from stableaudio_jax.convert.t5 import t5_from_config
from stableaudio_jax.store.tokenizers import train_sentencepiece
from stableaudio_jax.models.autoencoder import count_params
from stableaudio_jax.models.t5 import relative_position_bucket
from stableaudio_jax.parallel.mesh import make_mesh

pytestmark = pytest.mark.parity


SMALL = dict(vocab_size=160, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4,
             relative_attention_num_buckets=16, relative_attention_max_distance=24)
PROMPTS = ["a dog barking in the rain", "", "techno drum loop at 128 bpm with a distorted electric guitar riff "
           "and a crowd cheering in a stadium and birds at dawn", "sad piano"]


def _reference(feed_forward, seed=0):
    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(**SMALL, feed_forward_proj=feed_forward)).eval()


def _hf_hidden(model, ids, mask):
    with torch.no_grad():
        out = model(torch.from_numpy(np.asarray(ids, np.int64)),
                    attention_mask=torch.from_numpy(np.asarray(mask, np.int64))).last_hidden_state.numpy()
    return out * np.asarray(mask)[..., None]  # the reference conditioner zeroes padded positions


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 24), (8, 10)])
def test_relative_position_buckets_match_hf(num_buckets, max_distance):
    offsets = np.arange(-300, 301)
    expected = T5Attention._relative_position_bucket(torch.from_numpy(offsets), True, num_buckets, max_distance)
    np.testing.assert_array_equal(relative_position_bucket(jnp.asarray(offsets), num_buckets, max_distance),
                                  expected.numpy())


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    """A Hugging Face T5 directory: random small T5 (relu) + a sentencepiece model trained on captions."""
    directory = tmp_path_factory.mktemp("t5")
    _reference("relu").save_pretrained(directory)
    train_sentencepiece(PROMPTS * 10 + ["field recording of rain on a tin roof"] * 5, directory / "spiece.model",
                        vocab_size=150)
    return directory


@pytest.mark.parametrize("feed_forward", ["relu", "gated-gelu"])
def test_parity_with_transformers(feed_forward):
    ref = _reference(feed_forward)
    module = t5_from_config(t5_config_from_hf(ref.config.to_dict()))
    assert module.feed_forward == ("gated-gelu" if feed_forward == "gated-gelu" else "relu")
    params = t5_params_from_state_dict({k: v.numpy() for k, v in ref.state_dict().items()}, module)
    rng = np.random.default_rng(1)
    ids = rng.integers(3, SMALL["vocab_size"], (3, 40)).astype(np.int32)
    mask = np.ones((3, 40), bool)
    mask[1, 27:] = mask[2, 4:] = False
    ids[~mask] = 0
    expected = _hf_hidden(ref, ids, mask)
    ours = np.asarray(jax.jit(module.apply)(params, ids, mask)) * mask[..., None]
    assert np.abs(ours - expected).max() <= 1e-4 and np.abs(expected).max() > 0.5


def test_load_hf_directory_tokenize_and_encode(t5_dir):
    encoder = load_hf_t5(t5_dir, max_length=24)
    ids, mask = encoder.tokenize(PROMPTS)
    assert ids.shape == (4, 24) and mask[2].all() and mask[1].sum() == 1  # truncated / empty prompts
    emb = np.asarray(encoder.encode(ids, mask))
    assert emb.dtype == np.float32 and emb.shape == (4, 24, 32)
    assert not emb[~mask].any()  # padded positions are exactly zero
    expected = _hf_hidden(T5EncoderModel.from_pretrained(t5_dir).eval(), ids, mask)
    assert np.abs(emb - expected).max() <= 1e-4
    emb2, mask2 = encoder(PROMPTS)
    np.testing.assert_array_equal(np.asarray(emb2), emb)


def test_full_t5_checkpoint_uses_the_encoder_only(tmp_path, t5_dir):
    torch.manual_seed(3)
    full = T5ForConditionalGeneration(T5Config(**SMALL, num_decoder_layers=1)).eval()
    full.save_pretrained(tmp_path)
    (tmp_path / "spiece.model").write_bytes((t5_dir / "spiece.model").read_bytes())
    encoder = load_hf_t5(tmp_path, max_length=16)
    ids, mask = encoder.tokenize(["a dog barking", "rain"])
    with torch.no_grad():
        expected = full.encoder(torch.from_numpy(ids.astype(np.int64)), attention_mask=torch.from_numpy(
            mask.astype(np.int64))).last_hidden_state.numpy() * mask[..., None]
    assert np.abs(np.asarray(encoder.encode(ids, mask)) - expected).max() <= 1e-4


def test_mismatched_checkpoint_lists_keys():
    ref = _reference("relu")
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    del state["encoder.block.1.layer.0.SelfAttention.k.weight"]
    state["encoder.block.0.layer.2.extra.weight"] = np.zeros(3, np.float32)
    module = t5_from_config(t5_config_from_hf(ref.config.to_dict()))
    with pytest.raises(CheckpointMismatchError, match=r"(?s)1 missing keys.*block.1.layer.0.SelfAttention.k.weight"
                                                      r".*1 unexpected keys.*layer.2.extra.weight"):
        t5_params_from_state_dict(state, module)
    gated = t5_from_config(dict(t5_config_from_hf(ref.config.to_dict()), feed_forward="gated-gelu"))
    with pytest.raises(CheckpointMismatchError, match=r"DenseReluDense.wi_0.weight"):
        t5_params_from_state_dict({k: v.numpy() for k, v in ref.state_dict().items()}, gated)


@pytest.mark.parametrize("variant", ["t5-base", "t5-v1_1-base"])
def test_base_sizes(variant):
    module = t5_from_config(load_config(f"configs/t5.py:{variant}").model)
    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    abstract = jax.eval_shape(lambda i: module.init(jax.random.key(0), i, jnp.ones(i.shape, bool)), ids)
    assert count_params(abstract) == 109_628_544  # T5EncoderModel t5-base (SAO paper: 109M)


def test_bfloat16_tracks_float32(t5_dir):
    f32 = load_hf_t5(t5_dir, max_length=24)
    bf16 = load_hf_t5(t5_dir, max_length=24, dtype=jnp.bfloat16)
    ids, mask = f32.tokenize(PROMPTS)
    a, b = np.asarray(f32.encode(ids, mask)), np.asarray(bf16.encode(ids, mask))
    assert b.dtype == np.float32 and np.linalg.norm(a - b) / np.linalg.norm(a) < 2e-2


def test_embed_prompts_sharded_batches(t5_dir):
    encoder = load_hf_t5(t5_dir, max_length=24)
    prompts = [f"{p} {i}" for i in range(5) for p in PROMPTS][:19]  # 19: not a multiple of the batch
    emb, mask = encoder.embed_prompts(prompts, batch_size=8, mesh=make_mesh({"data": 8}))
    direct = np.asarray(encoder.encode(*encoder.tokenize(prompts)))
    assert emb.shape == (19, 24, 32) and mask.shape == (19, 24)
    np.testing.assert_allclose(emb, direct, atol=1e-5)
    half, _ = encoder.embed_prompts(prompts, batch_size=8, out_dtype=np.float16)
    assert half.dtype == np.float16
    with pytest.raises(ValueError, match=r"batch_size 12 is not divisible by the mesh's data axes"):
        encoder.embed_prompts(prompts, batch_size=12, mesh=make_mesh({"data": 8}))
