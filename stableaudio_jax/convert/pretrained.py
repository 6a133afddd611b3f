"""Stable Audio models from the Hugging Face Hub, converted once and kept in a local cache of stored models.

    converted_model("stabilityai/stable-audio-open-1.0") -> <root>/stabilityai--stable-audio-open-1.0/<commit>/

What is fetched: a stable-audio-tools repo's ``model_config.json`` and its weights (``model.safetensors``; a
``.ckpt`` only when there is no safetensors file), or a diffusers ``StableAudioPipeline`` repo's part folders
(safetensors preferred). The text encoder comes from the repo the config's prompt conditioner names (``t5-base``
→ ``google-t5/t5-base``: ``config.json``, ``spiece.model``, weights), or for CLAP models the roberta-base tokenizer
(``FacebookAI/roberta-base``) and, unless the checkpoint carries its fine-tuned CLAP, LAION's checkpoint
(``lukewys/laion_clap``). Nothing else (no other frameworks' weights, no READMEs, no samples).

Cache (root: ``cache_dir``, else ``$STABLEAUDIO_JAX_CACHE/hub``, else ``~/.cache/stableaudio_jax/hub``):

  <root>/<owner>--<name>/<commit>/        a stored text-to-audio model; its manifest's ``provenance.hub`` records
                                          the repo, the revision asked for, the commit, the layout, and the sha256 of
                                          every source file, the text encoder repo's (with its commit) included
  <root>/<owner>--<name>/refs/<revision>  the commit a branch or tag resolved to when it was last used

The key is the repo and its commit (a commit fixes the source files; their hashes are recorded, and the store
checks the converted weights' own hash on every load). The text encoder repo's default branch is resolved when a
model is converted and recorded; it is not asked for again while the conversion is cached.

Revisions: a 40-character commit that is cached is used without any request to the Hub. A branch or tag (default
``main``) costs one metadata request that resolves it, so an updated repo is converted again; nothing is
downloaded when that commit is cached. Offline (``HF_HUB_OFFLINE=1``), or when the Hub cannot be reached, a branch
is the commit recorded under ``refs/`` (or in the Hugging Face cache) and a missing conversion is made from the
Hugging Face cache's files. A conversion is written into a staging folder and renamed into place when complete,
and the ref is written after it, so a failure leaves nothing in the cache.
"""
from __future__ import annotations

import logging
import os
import posixpath
import re
import tempfile
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import quote

from stableaudio_jax import paths
from stableaudio_jax.convert.hub import (DEFAULT_REVISION, Hub, HubError, download, is_commit, listing,
                                         parse_repo_spec, resolve)
from stableaudio_jax.convert.state_dict import load_json
from stableaudio_jax.store import StoreError, read_info
from stableaudio_jax.store.format import file_sha256

logger = logging.getLogger(__name__)

SAT_CONFIG, DIFFUSERS_INDEX = "model_config.json", "model_index.json"
T5_REPOS = {name: f"google-t5/{name}" for name in ("t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b")}
ROBERTA_REPO, LAION_CLAP_REPO = "FacebookAI/roberta-base", "lukewys/laion_clap"
DIFFUSERS_PARTS = ("vae", "transformer", "projection_model")
_SHARD = re.compile(r"model-\d+-of-\d+\.safetensors")


def cache_root(cache_dir: str | os.PathLike | None = None) -> str:
    return os.path.abspath(os.fspath(cache_dir)) if cache_dir else os.path.join(paths.cache_root(), "hub")


def repo_cache(repo_id: str, cache_dir: str | os.PathLike | None = None) -> str:
    return os.path.join(cache_root(cache_dir), repo_id.replace("/", "--"))


# ---------------------------------------------------------------------------------------- which files


@dataclass
class Fetch:
    """Files of one repo at one commit: chosen, then downloaded (``local``: name → path)."""

    repo_id: str
    commit: str
    files: list[str]
    local: dict[str, str] = field(default_factory=dict)

    def fetch(self, hub: Hub) -> "Fetch":
        self.local = download(self.repo_id, self.commit, self.files, hub)
        return self

    def folder(self, subfolder: str = "") -> str:
        """The local folder of the repo (its snapshot), or of ``subfolder`` in it."""
        name, path = next(iter(self.local.items()))
        root = path[: len(path) - len(name)].rstrip("/" + os.sep)
        return os.path.join(root, subfolder) if subfolder else root

    def record(self) -> dict:
        return {"repo": self.repo_id, "commit": self.commit,
                "files": {name: file_sha256(path) for name, path in sorted(self.local.items())}}


def _missing(repo_id: str, commit: str, what: str, files: list[str]) -> HubError:
    shown = ", ".join(files[:12]) + (f", ... ({len(files) - 12} more)" if len(files) > 12 else "")
    return HubError(f"{repo_id}@{commit[:12]} has no {what}; its files: {shown or 'none'}")


def hf_weights(names: set[str], folder: str = "") -> list[str] | None:
    """A transformers folder's weights: safetensors (one file, or an index and its shards), else the pickle."""
    join = lambda n: posixpath.join(folder, n) if folder else n  # noqa: E731
    if join("model.safetensors") in names:
        return [join("model.safetensors")]
    if join("model.safetensors.index.json") in names:
        shards = sorted(n for n in names if posixpath.dirname(n) == folder and _SHARD.fullmatch(posixpath.basename(n)))
        return [join("model.safetensors.index.json")] + shards
    return [join("pytorch_model.bin")] if join("pytorch_model.bin") in names else None


def sat_weights(repo_id: str, commit: str, names: set[str]) -> str:
    """The stable-audio-tools checkpoint: ``model.safetensors``, else ``model.ckpt``, else the only top-level
    safetensors / ckpt file (a separately published VAE, ``vae_*``, is not the model)."""
    for name in ("model.safetensors", "model.ckpt"):
        if name in names:
            return name
    for ext in (".safetensors", ".ckpt"):
        found = [n for n in names if "/" not in n and n.endswith(ext) and not n.startswith("vae")]
        if len(found) == 1:
            return found[0]
    raise _missing(repo_id, commit, "stable-audio-tools checkpoint (model.safetensors or model.ckpt)", sorted(names))


def diffusers_files(repo_id: str, commit: str, names: set[str]) -> list[str]:
    files = []
    for part in DIFFUSERS_PARTS:
        weights = [f"{part}/diffusion_pytorch_model.{e}" for e in ("safetensors", "bin")
                   if f"{part}/diffusion_pytorch_model.{e}" in names]
        if f"{part}/config.json" not in names or not weights:
            raise _missing(repo_id, commit, f"{part}/config.json + {part}/diffusion_pytorch_model.safetensors",
                           sorted(names))
        files += [f"{part}/config.json", weights[0]]
    text = hf_weights(names, "text_encoder")
    if "text_encoder/config.json" not in names or text is None or "tokenizer/spiece.model" not in names:
        raise _missing(repo_id, commit, "text_encoder/ (config.json + model.safetensors) and tokenizer/spiece.model",
                       sorted(names))
    return files + ["text_encoder/config.json", *text, "tokenizer/spiece.model"]


def model_files(repo_id: str, commit: str, files: list[str]) -> tuple[str, list[str]]:
    """(layout, the files to fetch) of a Stable Audio repo; stable-audio-tools' layout first (the reference's own;
    SAO's repo has both)."""
    names = set(files)
    if SAT_CONFIG in names:
        return "stable-audio-tools", [SAT_CONFIG, sat_weights(repo_id, commit, names)]
    if DIFFUSERS_INDEX in names:
        return "diffusers", diffusers_files(repo_id, commit, names)
    raise _missing(repo_id, commit, f"Stable Audio model: neither {SAT_CONFIG} + model.safetensors "
                   f"(stable-audio-tools) nor {DIFFUSERS_INDEX} (diffusers)", files)


def text_encoder_repos(model_config: dict, source: str) -> dict[str, tuple[str, Callable]]:
    """{role: (repo id, chooser(repo_id, commit, names) -> files)} of the text encoder a stable-audio-tools model
    config's ``prompt`` conditioner names."""
    configs = model_config.get("model", {}).get("conditioning", {}).get("configs", [])
    prompt = next((c for c in configs if c.get("id") == "prompt"), {})
    cfg = prompt.get("config", {})
    if prompt.get("type") == "t5":
        name = cfg.get("t5_model_name", "t5-base")
        return {"t5": (T5_REPOS.get(name, name), _t5_files)}
    if prompt.get("type") == "clap_text":
        repos = {"clap_tokenizer": (ROBERTA_REPO, _roberta_files)}
        if not cfg.get("finetune", False):  # else the checkpoint carries the fine-tuned CLAP
            file = posixpath.basename(str(cfg.get("clap_ckpt_path") or "630k-audioset-best.pt"))
            repos["clap"] = (LAION_CLAP_REPO, lambda repo, commit, names: _one(repo, commit, names, file))
        return repos
    raise HubError(f"{source}: the prompt conditioner is of type {prompt.get('type')!r}; models with a 't5' or "
                   "'clap_text' prompt conditioner can be fetched")


def _t5_files(repo_id: str, commit: str, names: set[str]) -> list[str]:
    weights = hf_weights(names)
    if "config.json" not in names or "spiece.model" not in names or weights is None:
        raise _missing(repo_id, commit, "T5 checkpoint (config.json, spiece.model, model.safetensors)", sorted(names))
    return ["config.json", "spiece.model", *weights]


def _roberta_files(repo_id: str, commit: str, names: set[str]) -> list[str]:
    if {"vocab.json", "merges.txt"} <= names:
        return ["vocab.json", "merges.txt"]
    return _one(repo_id, commit, names, "tokenizer.json")


def _one(repo_id: str, commit: str, names: set[str], name: str) -> list[str]:
    if name not in names:
        raise _missing(repo_id, commit, name, sorted(names))
    return [name]


def plan(repo_id: str, revision: str | None, hub: Hub, choose: Callable) -> Fetch:
    """The files ``choose`` picks from ``repo_id`` at ``revision``, the revision resolved (nothing downloaded)."""
    commit, files = resolve(repo_id, revision, hub)
    if files is None:
        files = listing(repo_id, commit, hub)
    return Fetch(repo_id, commit, choose(repo_id, commit, set(files)))


# ------------------------------------------------------------------------------------------- conversion


def _from_stable_audio_tools(model: Fetch, texts: dict[str, Fetch], source: str):
    from stableaudio_jax.convert.clap import load_clap
    from stableaudio_jax.convert.stable_audio import load_stable_audio_tools, text_to_audio_model
    from stableaudio_jax.convert.t5 import load_hf_t5
    config_name, weights_name = model.files
    bundle = load_stable_audio_tools(model.local[weights_name], model.local[config_name])
    text_config = bundle.config.conditioning.text
    if text_config.type == "clap":
        clap = bundle.text_state or next(iter(texts["clap"].local.values()))
        text = load_clap(clap, texts["clap_tokenizer"].folder(), int(text_config.layer), str(text_config.output),
                         int(text_config.max_length))
    else:
        text = load_hf_t5(texts["t5"].folder(), max_length=int(text_config.max_length))
    return text_to_audio_model(bundle, text, source)


def _from_diffusers(model: Fetch, texts: dict[str, Fetch], source: str, max_length: int = 128):
    from stableaudio_jax.convert.stable_audio import load_diffusers, text_to_audio_model
    from stableaudio_jax.convert.t5 import load_hf_t5
    text = load_hf_t5(model.folder("text_encoder"), max_length,
                      tokenizer_file=os.path.join(model.folder("tokenizer"), "spiece.model"))
    return text_to_audio_model(load_diffusers(model.folder()), text, source)


def _text_encoders(model: Fetch, hub: Hub, source: str) -> dict[str, Fetch]:
    """The text encoder repos a stable-audio-tools model's config names, resolved and chosen from (the config is
    fetched first, so a missing text encoder file is found before the model's weights are downloaded)."""
    config_name = model.files[0]
    config = load_json(download(model.repo_id, model.commit, [config_name], hub)[config_name], "model config")
    return {role: plan(repo, None, hub, choose)
            for role, (repo, choose) in text_encoder_repos(config, f"{source}/{config_name}").items()}


CONVERTERS = {"stable-audio-tools": _from_stable_audio_tools, "diffusers": _from_diffusers}


def _convert(revision: str, model: Fetch, layout: str, hub: Hub, say: Callable[[str], None]):
    """(the converted text-to-audio model, the provenance record): downloads what is missing, then converts."""
    source = f"hf:{model.repo_id}@{model.commit}"
    texts = _text_encoders(model, hub, source) if layout == "stable-audio-tools" else {}
    for fetch in [model, *texts.values()]:
        say(f"fetching {fetch.repo_id}@{fetch.commit[:12]}: {', '.join(fetch.files)}")
        fetch.fetch(hub)
    say(f"converting {source}")
    converted = CONVERTERS[layout](model, texts, source)
    record = dict(model.record(), revision=revision, layout=layout,
                  text_encoders={role: fetch.record() for role, fetch in texts.items()})
    return converted, record


# ------------------------------------------------------------------------------------------------ cache


def _usable(directory: str) -> bool:
    """A complete conversion is there (a folder that no longer reads as one is converted again, with a warning)."""
    if not os.path.isdir(directory):
        return False
    try:
        read_info(directory, "text-to-audio")
        return True
    except StoreError as e:
        logger.warning("%s; converting it again", e)
        return False


def _ref_path(folder: str, revision: str) -> str:
    return os.path.join(folder, "refs", quote(revision, safe=""))


def read_ref(folder: str, revision: str) -> str | None:
    path = _ref_path(folder, revision)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        commit = f.read().strip()
    return commit if is_commit(commit) else None


def _write_ref(folder: str, revision: str, commit: str) -> None:
    path = _ref_path(folder, revision)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".ref-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(commit)
    os.replace(tmp, path)  # readers never see a half-written ref


def _store(target: str, converted, record: dict) -> None:
    from stableaudio_jax.store import save_text_to_audio
    replace = os.path.isdir(target)  # a stale conversion _usable refused
    try:
        save_text_to_audio(target, converted, overwrite=replace, provenance={"hub": record})
    except StoreError:
        if not _usable(target):  # else another process finished the same conversion first
            raise


def _remove_if_empty(folder: str) -> None:
    for path in (os.path.join(folder, "refs"), folder):
        try:
            os.rmdir(path)
        except OSError:
            pass  # not empty (other conversions) or absent


def converted_model(repo_id: str, revision: str | None = None, token: str | bool | None = None,
                    cache_dir: str | os.PathLike | None = None, endpoint: str | None = None,
                    say: Callable[[str], None] | None = None) -> str:
    """The stored text-to-audio model of a Stable Audio Hub repo (``OWNER/NAME``, ``hf:OWNER/NAME@REVISION``),
    downloaded and converted on first use, from the cache afterwards (see the module docstring)."""
    repo_id, revision = parse_repo_spec(repo_id, revision)
    say = say or logger.info
    hub, asked = Hub(token, endpoint), revision or DEFAULT_REVISION
    folder = repo_cache(repo_id, cache_dir)
    if is_commit(asked) and _usable(os.path.join(folder, asked)):
        return os.path.join(folder, asked)  # pinned and converted: no request at all
    commit, files = resolve(repo_id, asked, hub, known_ref=read_ref(folder, asked))
    target = os.path.join(folder, commit)
    if not _usable(target):
        try:
            layout, chosen = model_files(repo_id, commit, files if files is not None else listing(repo_id, commit,
                                                                                                   hub))
            converted, record = _convert(asked, Fetch(repo_id, commit, chosen), layout, hub, say)
            _store(target, converted, record)
        except BaseException:
            _remove_if_empty(folder)
            raise
        say(f"converted {repo_id}@{commit[:12]} into {target}")
    if not is_commit(asked):
        _write_ref(folder, asked, commit)
    return target


def hub_record(directory: str | os.PathLike) -> dict:
    """The ``provenance.hub`` record of a converted model (empty for models not fetched from the Hub)."""
    return dict(read_info(directory).provenance.get("hub") or {})

