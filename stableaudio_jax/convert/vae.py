"""Oobleck VAE checkpoints: stable-audio-tools and diffusers ``AutoencoderOobleck`` → our params and config.

Our parameter paths (see models/autoencoder.py) are translated to each naming scheme:

  ours                              stable-audio-tools                 diffusers
  encoder/conv_in                   encoder.layers.0                   encoder.conv1
  encoder/blocks_i/res_j/act_0      encoder.layers.{i+1}.layers.j.layers.0   encoder.block.i.res_unitJ.snake1
  encoder/blocks_i/act | conv       ....layers.3 | .layers.4           ....snake1 | .conv1
  decoder/blocks_i/act | conv_t     decoder.layers.{i+1}.layers.0 | .1 decoder.block.i.snake1 | .conv_t1
  decoder/blocks_i/res_j            ....layers.{j+2}                   ....res_unit{j+1}
  */act_out | */conv_out            *.layers.{n+1} | *.layers.{n+2}    *.snake1 | *.conv2

Layouts: conv ``weight_v [out, in, k]`` → ``[k, in, out]``; transposed conv ``[in, out, k]`` → ``[k, in, out]``;
``weight_g [C, 1, 1]`` and Snake ``[C]`` / ``[1, C, 1]`` → ``[C]``. Newer torch parametrisation names
(``parametrizations.weight.original0/1``) and weight-norm-free ``weight`` tensors are accepted too.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stableaudio_jax.convert.state_dict import Path, StateDict, fill_params, load_json, read_state_dict, strip_prefix
from stableaudio_jax.models.autoencoder import OobleckVAE, vae_from_config

SAT_PREFIXES = ("pretransform.model.", "")  # full diffusion model, or an unwrapped autoencoder
_RES_SAT = {"act_0": "0", "conv_0": "1", "act_1": "2", "conv_1": "3"}
_BLOCK_SAT = {"encoder": {"act": "3", "conv": "4"}, "decoder": {"act": "0", "conv_t": "1"}}
_RES_DIFFUSERS = {"act_0": "snake1", "conv_0": "conv1", "act_1": "snake2", "conv_1": "conv2"}


def _block_index(name: str) -> int:
    return int(name.split("_")[1])


def sat_key(path: Path, num_blocks: int) -> str:
    """stable-audio-tools name of one of our VAE parameters (without the ``pretransform.model.`` prefix)."""
    coder, module, *rest = path
    leaf = rest.pop()
    if module.startswith("blocks_"):
        parts = [coder, "layers", str(_block_index(module) + 1)]
        sub = rest[0]
        if sub.startswith("res_"):
            offset = 0 if coder == "encoder" else 2
            parts += ["layers", str(_block_index(sub) + offset), "layers", _RES_SAT[rest[1]]]
        else:
            parts += ["layers", _BLOCK_SAT[coder][sub]]
    else:
        index = {"conv_in": 0, "act_out": num_blocks + 1, "conv_out": num_blocks + 2}[module]
        parts = [coder, "layers", str(index)]
    return ".".join(parts + [leaf])


def diffusers_key(path: Path) -> str:
    """diffusers ``AutoencoderOobleck`` name of one of our VAE parameters."""
    coder, module, *rest = path
    leaf = rest.pop()
    if module.startswith("blocks_"):
        parts = [coder, "block", str(_block_index(module))]
        sub = rest[0]
        if sub.startswith("res_"):
            parts += [f"res_unit{_block_index(sub) + 1}", _RES_DIFFUSERS[rest[1]]]
        else:
            parts.append({"act": "snake1", "conv": "conv1", "conv_t": "conv_t1"}[sub])
    else:
        parts = [coder, {"conv_in": "conv1", "act_out": "snake1", "conv_out": "conv2"}[module]]
    return ".".join(parts + [leaf])


def torch_to_ours(path: Path, value: np.ndarray) -> np.ndarray:
    """Layout conversion of one tensor (see the module docstring)."""
    leaf = path[-1]
    if leaf == "weight_v":
        if value.ndim != 3:
            return value  # leave it: the shape check reports it
        return value.transpose(2, 0, 1) if path[-2] == "conv_t" else value.transpose(2, 1, 0)
    if leaf in ("weight_g", "alpha", "beta"):
        return value.reshape(-1)
    return value


def normalize_weight_norm_names(state: Mapping[str, np.ndarray]) -> StateDict:
    """Maps torch's parametrize names to weight_g/weight_v and splits plain conv ``weight`` into (g, v).

    A folded weight W is exactly reproduced by v = W, g = ||W|| (norm over all dims but dim 0, torch's dim=0).
    """
    out: StateDict = {}
    for key, value in state.items():
        if key.endswith(".parametrizations.weight.original0"):
            out[key[: -len("parametrizations.weight.original0")] + "weight_g"] = value
        elif key.endswith(".parametrizations.weight.original1"):
            out[key[: -len("parametrizations.weight.original1")] + "weight_v"] = value
        elif key.endswith(".weight") and np.ndim(value) == 3:
            stem = key[: -len("weight")]
            out[stem + "weight_v"] = value
            out[stem + "weight_g"] = np.sqrt(np.sum(np.square(value.astype(np.float64)), axis=(1, 2),
                                                    keepdims=True)).astype(value.dtype)
        else:
            out[key] = value
    return out


def abstract_vae_params(vae: OobleckVAE) -> Any:
    audio = jax.ShapeDtypeStruct((1, vae.downsampling_ratio, vae.audio_channels), jnp.float32)
    return jax.eval_shape(lambda a: vae.init(jax.random.key(0), a, sample=False), audio)["params"]


def vae_params_from_state_dict(state: Mapping[str, np.ndarray], vae: OobleckVAE, layout: str,
                               source: str = "state dict") -> dict:
    """``{'params': ...}`` for ``vae`` from a state dict in ``layout`` 'stable-audio-tools' or 'diffusers'
    (prefix already stripped)."""
    if layout == "stable-audio-tools":
        key_for = lambda path: sat_key(path, len(vae.strides))  # noqa: E731
    elif layout == "diffusers":
        key_for = diffusers_key
    else:
        raise ValueError(f"layout is {layout!r}; expected 'stable-audio-tools' or 'diffusers'")
    params = fill_params(normalize_weight_norm_names(state), abstract_vae_params(vae), key_for, torch_to_ours,
                         source)
    return {"params": params}


def _detect_sat_prefix(state: Mapping[str, np.ndarray], source: str) -> str:
    for prefix in SAT_PREFIXES:
        if any(k.startswith(prefix + "encoder.") or k.startswith(prefix + "decoder.") for k in state):
            return prefix
    raise ValueError(f"{source}: no VAE tensors found; expected keys under one of "
                     f"{[p + 'encoder.' for p in SAT_PREFIXES]} (stable-audio-tools layout)")


# ---------------------------------------------------------------------------------------------------- configs


def _require(cond: bool, source: str, message: str) -> None:
    if not cond:
        raise ValueError(f"{source}: {message}")


def vae_config_from_stable_audio_tools(model_config: Mapping[str, Any],
                                       source: str = "model_config.json") -> ml_collections.ConfigDict:
    """Our ``config.model`` from a stable-audio-tools model config (a full diffusion model's, whose
    ``model.pretransform`` holds the VAE, or an autoencoder's own)."""
    model = model_config.get("model", {})
    if "pretransform" in model:
        _require(model["pretransform"].get("type") == "autoencoder", source,
                 f"model.pretransform.type is {model['pretransform'].get('type')!r}; expected 'autoencoder'")
        ae = model["pretransform"]["config"]
    else:
        ae = model
    _require("encoder" in ae and "decoder" in ae, source, "no autoencoder config (encoder/decoder) found")
    enc, dec = ae["encoder"], ae["decoder"]
    for part, name in ((enc, "encoder"), (dec, "decoder")):
        _require(part.get("type") == "oobleck", source, f"{name}.type is {part.get('type')!r}; expected 'oobleck'")
    _require(ae.get("bottleneck", {}).get("type") == "vae", source,
             f"bottleneck.type is {ae.get('bottleneck', {}).get('type')!r}; expected 'vae'")
    e, d = enc["config"], dec["config"]
    for key in ("channels", "c_mults", "strides"):
        _require(e.get(key) == d.get(key), source, f"encoder.config.{key} {e.get(key)} != decoder.config.{key} "
                 f"{d.get(key)}; only symmetric Oobleck VAEs are supported")
    for part, name in ((e, "encoder"), (d, "decoder")):
        for flag in ("antialias_activation", "use_nearest_upsample"):
            _require(not part.get(flag, False), source, f"{name}.config.{flag} is true; not supported")
    latent = int(d["latent_dim"])
    _require(int(e["latent_dim"]) == 2 * latent, source,
             f"encoder latent_dim {e['latent_dim']} != 2 x decoder latent_dim {latent} (VAE mean | scale)")
    _require(e.get("use_snake", False) == d.get("use_snake", False), source, "encoder/decoder use_snake differ")
    _require(e.get("in_channels", 2) == d.get("out_channels", 2), source,
             f"encoder in_channels {e.get('in_channels', 2)} != decoder out_channels {d.get('out_channels', 2)}")
    return ml_collections.ConfigDict(dict(
        type="oobleck_vae", sample_rate=int(model_config.get("sample_rate", 44100)),
        audio_channels=int(d.get("out_channels", 2)), channels=int(e["channels"]),
        c_mults=tuple(int(c) for c in e["c_mults"]), strides=tuple(int(s) for s in e["strides"]),
        latent_dim=latent, activation="snake" if e.get("use_snake", False) else "elu",
        final_tanh=bool(d.get("final_tanh", True)), remat=False))


def vae_config_from_diffusers(config: Mapping[str, Any], source: str = "config.json") -> ml_collections.ConfigDict:
    """Our ``config.model`` from a diffusers ``AutoencoderOobleck`` config.json."""
    hidden, dec_ch, latent = config["encoder_hidden_size"], config["decoder_channels"], config["decoder_input_channels"]
    _require(hidden == dec_ch, source, f"encoder_hidden_size {hidden} != decoder_channels {dec_ch}; "
             "only symmetric Oobleck VAEs are supported")
    _require(hidden == 2 * latent, source, f"encoder_hidden_size {hidden} != 2 x decoder_input_channels {latent} "
             "(diffusers' encoder emits encoder_hidden_size channels: mean | scale)")
    return ml_collections.ConfigDict(dict(
        type="oobleck_vae", sample_rate=int(config.get("sampling_rate", 44100)),
        audio_channels=int(config.get("audio_channels", 2)), channels=int(hidden),
        c_mults=tuple(int(c) for c in config["channel_multiples"]),
        strides=tuple(int(s) for s in config["downsampling_ratios"]), latent_dim=int(latent),
        activation="snake", final_tanh=False, remat=False))


# ---------------------------------------------------------------------------------------------------- loaders


def _load_json(path: str | os.PathLike) -> dict:
    return load_json(path, "model config")


def load_vae_stable_audio_tools(checkpoint_path: str | os.PathLike, model_config: str | os.PathLike | Mapping,
                                prefix: str | None = None) -> tuple[ml_collections.ConfigDict, dict]:
    """(``config.model``, ``{'params': ...}``) from a stable-audio-tools checkpoint (full SAO ``model.safetensors``
    / ``model.ckpt``, or a VAE-only ``vae_model.ckpt``) and its ``model_config.json`` (path or dict).

    Only the VAE's tensors are read (``pretransform.model.*`` in a full model); every one of them must map.
    """
    source = os.fspath(checkpoint_path)
    config_dict = model_config if isinstance(model_config, Mapping) else _load_json(model_config)
    model_cfg = vae_config_from_stable_audio_tools(config_dict)
    state = read_state_dict(checkpoint_path)
    prefix = _detect_sat_prefix(state, source) if prefix is None else prefix
    sub = strip_prefix(state, prefix)  # with prefix "" (a VAE-only file) every key must be the VAE's
    vae = vae_from_config(model_cfg)
    return model_cfg, vae_params_from_state_dict(sub, vae, "stable-audio-tools", source)


def load_vae_diffusers(directory: str | os.PathLike) -> tuple[ml_collections.ConfigDict, dict]:
    """(``config.model``, ``{'params': ...}``) from a diffusers pipeline directory (its ``vae/``) or a VAE folder."""
    directory = os.fspath(directory)
    folder = os.path.join(directory, "vae") if os.path.isdir(os.path.join(directory, "vae")) else directory
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{folder}: no config.json; expected a diffusers AutoencoderOobleck folder")
    weights = [os.path.join(folder, name) for name in ("diffusion_pytorch_model.safetensors",
                                                        "diffusion_pytorch_model.bin")]
    weights = [w for w in weights if os.path.isfile(w)]
    if not weights:
        raise FileNotFoundError(f"{folder}: no diffusion_pytorch_model.safetensors (or .bin)")
    model_cfg = vae_config_from_diffusers(_load_json(config_path), config_path)
    vae = vae_from_config(model_cfg)
    return model_cfg, vae_params_from_state_dict(read_state_dict(weights[0]), vae, "diffusers", weights[0])
