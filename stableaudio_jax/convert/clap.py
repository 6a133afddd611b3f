"""CLAP text-branch weights → :class:`stableaudio_jax.models.clap.ClapTextEncoder` params.

Three layouts hold the same tensors under different prefixes:

  LAION CLAP checkpoint (``clap_ckpt_path``)   module.text_branch.<roberta>      module.text_projection.{0,2}.*
  stable-audio-tools, ``finetune: true``       conditioner.conditioners.prompt.model.model.text_branch.<roberta>
                                               conditioner.conditioners.prompt.model.model.text_projection.{0,2}.*
  Hugging Face ClapModel / ClapTextModelWithProjection
                                               text_model.<roberta>              text_projection.linear{1,2}.*

``<roberta>`` is a Hugging Face ``RobertaModel`` state dict (embeddings.*, encoder.layer.N.*, pooler.dense.*).
Audio-branch keys and buffers (position_ids, token_type_ids) are ignored; every text parameter must be present.
Torch linears are ``[out, in]``: kernels are transposed, q/k/v split into heads.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stableaudio_jax.convert.state_dict import Path, fill_params
from stableaudio_jax.models.clap import ClapTextEncoder

# (branch prefix, projection prefix, names of the projection's two linears)
LAYOUTS = {
    "laion": ("module.text_branch.", "module.text_projection.", ("0", "2")),
    "laion-unwrapped": ("text_branch.", "text_projection.", ("0", "2")),  # saved without DataParallel
    "stable-audio-tools": ("conditioner.conditioners.prompt.model.model.text_branch.",
                           "conditioner.conditioners.prompt.model.model.text_projection.", ("0", "2")),
    "hugging-face": ("text_model.", "text_projection.", ("linear1", "linear2")),
}
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_LAYER_KEYS = {
    ("attention", "query"): "attention.self.query", ("attention", "key"): "attention.self.key",
    ("attention", "value"): "attention.self.value", ("attention", "output"): "attention.output.dense",
    ("attention_norm", "norm"): "attention.output.LayerNorm", ("intermediate",): "intermediate.dense",
    ("output",): "output.dense", ("output_norm", "norm"): "output.LayerNorm",
}


def detect_layout(state: Mapping[str, np.ndarray]) -> str:
    """Which of :data:`LAYOUTS` a state dict uses (the one whose word embeddings it holds)."""
    found = [name for name, (branch, _, _) in LAYOUTS.items() if f"{branch}embeddings.word_embeddings.weight" in state]
    if not found:
        raise ValueError("no CLAP text branch in this state dict: expected one of "
                         + ", ".join(f"{b}embeddings.word_embeddings.weight" for b, _, _ in LAYOUTS.values()))
    return found[0]


def clap_config_from_state_dict(state: Mapping[str, np.ndarray], num_heads: int | None = None,
                                layer_norm_eps: float = 1e-5, layout: str | None = None) -> ml_collections.ConfigDict:
    """The text encoder's config, read off the tensors' shapes. The head count and LayerNorm epsilon are not in
    them: every RoBERTa size has 64-wide heads (``num_heads`` default: width / 64; roberta-base: 12), LAION CLAP's
    text branch uses eps 1e-5; a Hugging Face directory's ``config.json`` says (:func:`clap_config_from_hf`)."""
    branch, projection, (first, _) = LAYOUTS[layout or detect_layout(state)]
    vocab, width = state[f"{branch}embeddings.word_embeddings.weight"].shape
    layers = 1 + max(int(k[len(branch):].split(".")[2]) for k in state if k.startswith(f"{branch}encoder.layer."))
    return ml_collections.ConfigDict(dict(
        vocab_size=int(vocab), width=int(width), num_layers=layers, num_heads=num_heads or max(1, int(width) // 64),
        intermediate_size=int(state[f"{branch}encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_positions=int(state[f"{branch}embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state[f"{branch}embeddings.token_type_embeddings.weight"].shape[0]),
        projection_dim=int(state[f"{projection}{first}.weight"].shape[0]), layer_norm_eps=float(layer_norm_eps)))


def clap_config_from_hf(config: Mapping[str, Any], source: str = "config.json") -> ml_collections.ConfigDict:
    """Our config from a Hugging Face ``ClapConfig`` (its ``text_config``) or ``ClapTextConfig`` config.json."""
    text = config.get("text_config", config)
    act = text.get("hidden_act", "gelu")
    if act != "gelu" or text.get("projection_hidden_act", "relu") != "relu":
        raise ValueError(f"{source}: hidden_act {act!r} / projection_hidden_act "
                         f"{text.get('projection_hidden_act')!r}; CLAP's text branch uses 'gelu' / 'relu'")
    projection = config.get("projection_dim", text.get("projection_dim", 512))
    return ml_collections.ConfigDict(dict(
        vocab_size=int(text.get("vocab_size", 50265)), width=int(text.get("hidden_size", 768)),
        num_layers=int(text.get("num_hidden_layers", 12)), num_heads=int(text.get("num_attention_heads", 12)),
        intermediate_size=int(text.get("intermediate_size", 3072)),
        max_positions=int(text.get("max_position_embeddings", 514)),
        type_vocab_size=int(text.get("type_vocab_size", 1)), pad_id=int(text.get("pad_token_id", 1)),
        projection_dim=int(projection), layer_norm_eps=float(text.get("layer_norm_eps", 1e-12))))


def _key(path: Path, branch: str, projection: str, linears: tuple[str, str]) -> str:
    head = path[0]
    if head in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        return f"{branch}embeddings.{head}.weight"
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[path[-1]]
    if head == "embeddings_norm":
        return f"{branch}embeddings.LayerNorm.{leaf}"
    if head == "pooler":
        return f"{branch}pooler.dense.{leaf}"
    if head in ("projection_1", "projection_2"):
        return f"{projection}{linears[int(head[-1]) - 1]}.{leaf}"
    layer = int(head.split("_")[1])
    return f"{branch}encoder.layer.{layer}.{_LAYER_KEYS[path[1:-1]]}.{leaf}"


def _transform(module: ClapTextEncoder):
    heads, head_dim = module.num_heads, module.width // module.num_heads

    def transform(path: Path, value: np.ndarray) -> np.ndarray:
        attention = len(path) > 2 and path[1] == "attention"
        if path[-1] == "kernel":
            if attention and path[2] in ("query", "key", "value"):
                return value.T.reshape(value.shape[1], heads, head_dim)
            if attention and path[2] == "output":
                return value.T.reshape(heads, head_dim, value.shape[0])
            return value.T
        if path[-1] == "bias" and attention and path[2] in ("query", "key", "value"):
            return value.reshape(heads, head_dim)
        return value

    return transform


def clap_params_from_state_dict(state: Mapping[str, np.ndarray], module: ClapTextEncoder,
                                source: str = "CLAP state dict", layout: str | None = None) -> dict:
    """``{'params': ...}`` for ``module`` from any of :data:`LAYOUTS` (audio-branch and other keys ignored)."""
    layout = layout or detect_layout(state)
    branch, projection, linears = LAYOUTS[layout]
    text = {k: v for k, v in state.items() if k.startswith((branch, projection))}
    ignore = {branch + b for b in _BUFFERS}
    ids = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    abstract = jax.eval_shape(lambda i: module.init(jax.random.key(0), i, jnp.ones(i.shape, bool)), ids)["params"]
    return {"params": fill_params(text, abstract, lambda p: _key(p, branch, projection, linears),
                                  _transform(module), f"{source} ({layout} layout)", ignore=ignore)}


def clap_from_config(config: Any, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32) -> ClapTextEncoder:
    return ClapTextEncoder(**dict(config), dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))


def load_clap(checkpoint: str | os.PathLike | Mapping, tokenizer_dir: str | os.PathLike | None = None, layer: int = -2,
              output: str = "features", max_length: int = 77, num_heads: int | None = None, dtype: Any = jnp.float32):
    """A bound CLAP text encoder (:class:`stableaudio_jax.store.clap_text.ClapText`) from any of the layouts:

    - a Hugging Face ``ClapModel`` / ``ClapTextModelWithProjection`` directory (``config.json`` + weights, its
      tokenizer files unless ``tokenizer_dir`` says otherwise);
    - a LAION CLAP checkpoint (``.pt``: ``module.text_branch.*``) or a fine-tuned stable-audio-tools checkpoint
      (``.ckpt`` / ``.safetensors``: ``conditioner.conditioners.prompt.model.model.text_branch.*``); these carry no
      tokenizer: ``tokenizer_dir`` is a ``roberta-base`` tokenizer directory (vocab.json + merges.txt).
    Stable Audio 1.0 / 2.0 use ``layer=-2``, ``output="features"``.
    """
    from stableaudio_jax.convert.state_dict import load_json, read_state_dict
    from stableaudio_jax.convert.state_dict import read_hf_weights
    from stableaudio_jax.store.clap_text import ClapText
    from stableaudio_jax.store.clap_tokenizer import ClapTokenizer
    if isinstance(checkpoint, Mapping):  # a state dict already read (a fine-tuned CLAP inside a model checkpoint)
        state, source, checkpoint = dict(checkpoint), "the model checkpoint's CLAP", ""
        config = clap_config_from_state_dict(state, num_heads=num_heads)
    elif os.path.isdir(checkpoint := os.fspath(checkpoint)):
        config_path = os.path.join(checkpoint, "config.json")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{checkpoint}: no config.json; expected a Hugging Face CLAP directory")
        config = clap_config_from_hf(load_json(config_path, "CLAP config"), config_path)
        state, source = read_hf_weights(checkpoint)
        tokenizer_dir = checkpoint if tokenizer_dir is None else tokenizer_dir
    else:
        state, source = read_state_dict(checkpoint), checkpoint
        config = clap_config_from_state_dict(state, num_heads=num_heads)
    if tokenizer_dir is None:
        raise ValueError(f"{source}: a CLAP checkpoint carries no tokenizer; give the roberta-base tokenizer "
                         "directory (vocab.json + merges.txt) as tokenizer_dir / --clap-tokenizer")
    module = clap_from_config(config, dtype=dtype)
    params = clap_params_from_state_dict(state, module, source)
    tokenizer = ClapTokenizer.from_directory(tokenizer_dir, max_length)
    if tokenizer.vocab_size > module.vocab_size:
        raise ValueError(f"{tokenizer_dir}: {tokenizer.vocab_size} tokens but the model's vocab_size is "
                         f"{module.vocab_size}")
    return ClapText(module, params, tokenizer, max_length, layer, output, source=source)
