"""Stable Audio models from the Hugging Face Hub, without the network: a local server speaking the Hub's file API
(tests/hub_server.py) serves a tiny Stable Audio Open repo in both published layouts (gated behind a token, with
a big ``model.ckpt`` beside ``model.safetensors``, as the real one), its T5 repo, a diffusers-only repo, a CLAP model
and broken ones. ``convert --from hf:`` and ``TextToAudioPipeline.from_pretrained`` download only what they need,
convert once, and answer later calls from the cache; the Hub's refusals are one error line each."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import (build_tiny_sao_diffusers, finetuned_clap_state, roberta_vocab, sat_model_config,
                     write_sat_checkpoint)
from huggingface_hub import constants
from hub_server import FakeHub

from stableaudio_jax.cli import main
from stableaudio_jax.convert.hub import HubError, parse_repo_spec
from stableaudio_jax.convert.pretrained import hf_weights, hub_record, text_encoder_repos
from stableaudio_jax.inference.pipeline import TextToAudioPipeline
from stableaudio_jax.store import read_info

COND = 128  # 2 key/value heads of 64, as in test_cli
SAO, T5, TOKEN = "stabilityai/stable-audio-open-1.0", "google-t5/t5-base", "hf_test_licence_accepted"
CLI = os.path.join(os.path.dirname(sys.executable), "stableaudio-jax")
PROMPT = "rain on a tin roof"


def _files(folder, prefix=""):
    return {prefix + str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _repos(root):
    """{repo id: (files, gated token)}: the repos the fake Hub serves."""
    from safetensors.numpy import load_file, save_file
    parts = build_tiny_sao_diffusers(root / "diffusers", COND, 32, ["a dog barking", PROMPT])
    write_sat_checkpoint(parts, root / "model.safetensors")
    config = sat_model_config(COND)
    diffusers = _files(root / "diffusers") | {"model_index.json": b'{"_class_name": "StableAudioPipeline"}'}
    sao = {"model_config.json": json.dumps(config).encode(), "model.safetensors": (root / "model.safetensors")
           .read_bytes(), "model.ckpt": os.urandom(1 << 16), "README.md": b"# tiny SAO"} | diffusers
    t5 = {"config.json": diffusers["text_encoder/config.json"], "spiece.model": diffusers["tokenizer/spiece.model"],
          "model.safetensors": diffusers["text_encoder/model.safetensors"], "tokenizer.json": b"{}",
          "pytorch_model.bin": os.urandom(4096), "README.md": b"# t5"}
    state = load_file(root / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("model.model.transformer.layers.1.")},
              root / "broken.safetensors")
    broken = {"model_config.json": sao["model_config.json"], "model.safetensors": (root / "broken.safetensors")
              .read_bytes()}
    no_t5 = json.loads(json.dumps(config))
    no_t5["model"]["conditioning"]["configs"][0]["config"]["t5_model_name"] = "acme/no-such-t5"
    write_sat_checkpoint(parts, root / "sa2.safetensors", extra=finetuned_clap_state(COND, layers=1, intermediate=64))
    clap = json.loads(json.dumps(config))
    clap["model"]["conditioning"]["configs"][0] = {"id": "prompt", "type": "clap_text", "config": {
        "use_text_features": True, "feature_layer_ix": -2, "finetune": True, "clap_ckpt_path": "x.pt"}}
    roberta = _files(roberta_vocab(root / "roberta"))
    return {SAO: (sao, TOKEN), T5: (t5, None), "acme/sao-diffusers": (diffusers, None),
            "acme/broken": (broken, None), "acme/no-t5": ({**broken, "model_config.json": json.dumps(no_t5).encode()},
                                                          None),
            "acme/sa2": ({"model_config.json": json.dumps(clap).encode(),
                          "model.safetensors": (root / "sa2.safetensors").read_bytes()}, None),
            "FacebookAI/roberta-base": (roberta | {"tokenizer.json": b"{}", "README.md": b"# roberta"}, None)}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    server = FakeHub()
    server.root = root
    server.served = _repos(root)
    server.commits = {repo: server.add(repo, files, gated) for repo, (files, gated) in server.served.items()}
    server.start()
    yield server
    server.stop()


@pytest.fixture
def online(hub, monkeypatch):
    """In-process huggingface_hub pointed at the fake Hub (the constants it read at import), online, no saved
    token; the module's shared Hugging Face and converted-model caches."""
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub.root / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hub.root / "no-saved-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("STABLEAUDIO_JAX_CACHE", str(hub.root / "sj-cache"))
    hub.clear()
    return hub


def _cli(hub, *args, cache="sj-cache", offline=False):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hub.root / "hf-home"), HF_HUB_CACHE=str(hub.root / "hf-cache"),
               STABLEAUDIO_JAX_CACHE=str(hub.root / cache), HF_HUB_OFFLINE="1" if offline else "0",
               HF_HUB_DISABLE_PROGRESS_BARS="1", JAX_PLATFORMS="cpu")
    return subprocess.run([CLI, "convert", *args], capture_output=True, text=True, timeout=600, env=env)


def _fetched(hub):
    """{(repo, file)} of the files whose download was asked for (HEAD or GET on /resolve/)."""
    out = set()
    for path in hub.downloads():
        if "/resolve/" in path:
            repo, _, tail = path.lstrip("/").partition("/resolve/")
            out.add((repo, tail.partition("/")[2]))
    return out


def _generate(pipe):
    return pipe.generate(PROMPT, steps=3, seed=7)


def test_convert_from_the_hub_downloads_only_what_it_needs(hub, tmp_path):
    result = _cli(hub, "--from", f"hf:{SAO}", "--token", TOKEN, "--out", str(tmp_path / "sao"))
    assert result.returncode == 0, result.stderr
    assert _fetched(hub) == {(SAO, "model_config.json"), (SAO, "model.safetensors"), (T5, "config.json"),
                             (T5, "spiece.model"), (T5, "model.safetensors")}  # no model.ckpt, no diffusers copy
    assert all(r.token == TOKEN for r in hub.requests if r.path.startswith(f"/{SAO}/"))
    assert all(r.token is None for r in hub.requests if r.path.startswith("/lfs/"))  # the CDN gets no token
    record = hub_record(tmp_path / "sao")
    served = hub.served[SAO][0]
    assert record["commit"] == hub.commits[SAO] and record["layout"] == "stable-audio-tools"
    assert record["files"]["model.safetensors"] == hashlib.sha256(served["model.safetensors"]).hexdigest()
    assert record["text_encoders"]["t5"]["repo"] == T5 and record["text_encoders"]["t5"]["commit"] == hub.commits[T5]
    cached = hub.root / "sj-cache" / "hub" / SAO.replace("/", "--") / hub.commits[SAO]
    assert f"converted model: {cached}" in result.stdout
    assert read_info(cached).weights_sha256 == read_info(tmp_path / "sao").weights_sha256
    hub.audio = _generate(TextToAudioPipeline.from_checkpoint(tmp_path / "sao"))
    assert hub.audio.shape == (1, 512, 2) and np.isfinite(hub.audio).all() and np.abs(hub.audio).max() > 0


def test_from_pretrained_reuses_the_conversion(online):
    hub = online
    pipe = TextToAudioPipeline.from_pretrained(SAO, token=TOKEN)  # branch main: one metadata request
    assert [r.path for r in hub.requests if "/api/models/" in r.path] == [f"/api/models/{SAO}/revision/main"]
    assert hub.downloads() == []
    np.testing.assert_array_equal(_generate(pipe), hub.audio)
    hub.clear()
    TextToAudioPipeline.from_pretrained(f"hf:{SAO}@{hub.commits[SAO]}")  # a pinned commit: no request at all
    assert hub.requests == []


def test_offline_uses_the_caches(online, monkeypatch, capsys):
    hub = online
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    TextToAudioPipeline.from_pretrained(SAO)  # the branch from the converted cache's refs
    assert hub.requests == []
    assert main(["convert", "--from", "hf:acme/sao-diffusers"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "HF_HUB_OFFLINE" in err and "acme/sao-diffusers" in err, err
    # a fresh converted-model cache: converted again from the Hugging Face cache's files, still no request
    result = _cli(hub, "--from", f"hf:{SAO}", cache="sj-cache-2", offline=True)
    assert result.returncode == 0, result.stderr
    assert hub.requests == []
    again = hub.root / "sj-cache-2" / "hub" / SAO.replace("/", "--") / hub.commits[SAO]
    assert read_info(again).weights_sha256 == read_info(str(again).replace("sj-cache-2", "sj-cache")).weights_sha256


def test_an_unreachable_hub_falls_back_to_the_converted_ref(online, monkeypatch, caplog):
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed + "/{repo_id}/resolve/{revision}/{filename}")
    TextToAudioPipeline.from_pretrained(SAO)
    assert f"cannot reach {closed} for {SAO}@main" in caplog.text and "using the cached" in caplog.text
    with pytest.raises(HubError, match=f"cannot reach {closed} for acme/sao-diffusers@main"):
        TextToAudioPipeline.from_pretrained("acme/sao-diffusers")


@pytest.mark.parametrize("where", ["HF_TOKEN", "saved login"])
def test_the_token_is_found_where_huggingface_hub_keeps_it(online, tmp_path, monkeypatch, where):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # downloaded again, with the token
    if where == "HF_TOKEN":
        monkeypatch.setenv("HF_TOKEN", TOKEN)
    else:
        (tmp_path / "token").write_text(TOKEN)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    TextToAudioPipeline.from_pretrained(SAO, cache_dir=tmp_path / "cache")
    assert (SAO, "model.safetensors") in _fetched(online)
    assert all(r.token == TOKEN for r in online.requests if r.path.startswith(f"/{SAO}/"))


def test_a_diffusers_repo_converts_to_the_same_model(online):
    pipe = TextToAudioPipeline.from_pretrained("acme/sao-diffusers")
    fetched = _fetched(online)
    assert {repo for repo, _ in fetched} == {"acme/sao-diffusers"}  # its T5 is its own text_encoder/
    assert ("acme/sao-diffusers", "transformer/diffusion_pytorch_model.safetensors") in fetched
    np.testing.assert_allclose(_generate(pipe), online.audio, atol=2e-4)


def test_a_clap_model_fetches_its_tokenizer(online):
    pipe = TextToAudioPipeline.from_pretrained("acme/sa2")
    assert {f for f in _fetched(online) if f[0] != "acme/sa2"} == {("FacebookAI/roberta-base", "vocab.json"),
                                                                   ("FacebookAI/roberta-base", "merges.txt")}
    assert type(pipe.model.text).__name__ == "ClapText"  # from the checkpoint (finetune: true), not LAION's
    assert np.isfinite(pipe.generate(PROMPT, steps=2)).all()


@pytest.mark.parametrize("args,expected", [
    ([f"hf:{SAO}"], [f"{SAO} is a gated repository and no Hugging Face token was found", "accept its licence at",
                     "--token", "hf auth login"]),
    ([f"hf:{SAO}", "--token", "hf_other"], [f"{SAO} is a gated repository", "token used has no access"]),
    (["hf:acme/no-such-model"], ["no model repository 'acme/no-such-model'", "check the id"]),
    ([f"hf:{SAO}@v9"], [f"{SAO} has no revision 'v9'"]),
    ([f"hf:{SAO}@{'0' * 40}"], [f"{SAO} has no revision '{'0' * 40}'"]),
    (["hf:not a repo"], ["'hf:not a repo' is not a Hugging Face model id"]),
    (["hf:acme/no-t5"], ["no model repository 'acme/no-such-t5'"]),
])
def test_the_hubs_refusals_are_one_line_and_leave_nothing(online, tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # nothing downloaded before
    assert main(["convert", "--from", *args, "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("stableaudio-jax convert: error: "), err
    assert all(text in err for text in expected), err
    assert _empty(tmp_path / "cache")


def test_generate_takes_a_hub_repo(online, tmp_path, monkeypatch, capsys):
    """`generate --checkpoint hf:REPO@COMMIT` samples the cached conversion; a refusal is the same one line."""
    hub = online
    TextToAudioPipeline.from_pretrained(SAO, token=TOKEN)  # converted (or found) in the module's cache
    hub.clear()
    out = tmp_path / "gen.wav"
    assert main(["generate", PROMPT, "--checkpoint", f"hf:{SAO}@{hub.commits[SAO]}", "--steps", "2", "--out",
                 str(out), "--no-progress"]) == 0
    assert out.is_file() and hub.requests == []  # the pinned, cached commit: no request at all
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("STABLEAUDIO_JAX_CACHE", str(tmp_path / "empty-cache"))
    assert main(["generate", PROMPT, "--checkpoint", f"hf:{SAO}", "--out", str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("stableaudio-jax generate: error: ") and "is a gated repository" in err, err


def _empty(folder):
    return not folder.exists() or os.listdir(folder) == []


def test_a_failed_conversion_leaves_nothing_in_the_cache(online, tmp_path, monkeypatch):
    from stableaudio_jax.convert import CheckpointMismatchError
    from stableaudio_jax.store import models
    with pytest.raises(CheckpointMismatchError, match="transformer.layers.1"):
        TextToAudioPipeline.from_pretrained("acme/broken", cache_dir=tmp_path / "cache")
    assert _empty(tmp_path / "cache")

    def disk_full(directory, vae, provenance=None):  # the last part of the bundle fails to write
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(models, "write_vae", disk_full)
    with pytest.raises(OSError, match="No space left"):
        TextToAudioPipeline.from_pretrained(SAO, token=TOKEN, cache_dir=tmp_path / "cache")
    assert _empty(tmp_path / "cache")  # no half-written model, no staging folder, no ref


def test_repo_specs_and_text_encoder_repos():
    assert parse_repo_spec(f"hf:{SAO}") == (SAO, None)
    assert parse_repo_spec(f"hf:{SAO}@refs/pr/1") == (SAO, "refs/pr/1")
    assert parse_repo_spec(SAO, "v1") == (SAO, "v1")
    for bad in ("hf:", "hf:a/b/c", "hf:a/b@", "hf:a--b/c"):
        with pytest.raises(HubError, match="not a Hugging Face model id|nothing after '@'"):
            parse_repo_spec(bad)
    with pytest.raises(HubError, match="names revision 'a' but revision='b'"):
        parse_repo_spec(f"{SAO}@a", "b")

    def prompt(type_, **config):
        return {"model": {"conditioning": {"configs": [{"id": "prompt", "type": type_, "config": config}]}}}
    assert text_encoder_repos(prompt("t5", t5_model_name="t5-base"), "c")["t5"][0] == "google-t5/t5-base"
    assert text_encoder_repos(prompt("t5", t5_model_name="google/flan-t5-large"), "c")["t5"][0] == \
        "google/flan-t5-large"
    laion = text_encoder_repos(prompt("clap_text", finetune=False, clap_ckpt_path="/ckpts/630k-best.pt"), "c")
    assert laion["clap"][1]("lukewys/laion_clap", "0" * 40, {"630k-best.pt", "other.pt"}) == ["630k-best.pt"]
    with pytest.raises(HubError, match="'prompt' conditioner is of type 'clip'|prompt conditioner is of type"):
        text_encoder_repos(prompt("clip"), "c")
    shards = {"a/model.safetensors.index.json", "a/model-00001-of-00002.safetensors",
              "a/model-00002-of-00002.safetensors", "a/pytorch_model.bin"}
    assert hf_weights(shards, "a") == ["a/model.safetensors.index.json", "a/model-00001-of-00002.safetensors",
                                       "a/model-00002-of-00002.safetensors"]
    assert hf_weights({"pytorch_model.bin", "tf_model.h5"}) == ["pytorch_model.bin"]
