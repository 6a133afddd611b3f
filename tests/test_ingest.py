"""`ingest`: a folder of audio + captions → TFDS array_record dataset, read back by index without TensorFlow."""
import argparse
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from stableaudio_jax.audio.io import match_channels, resample
from stableaudio_jax.commands import ingest as ingest_command
from stableaudio_jax.data import ingest as ingest_module
from stableaudio_jax.data.ingest import ingest, load_audio_dataset

RATE = 44100
Q = 1.01 / 32768  # 16-bit quantisation (round to k/32768; a sample clipped at +1 is 1/32768 off)

# relative path → (sample rate, channels, seconds, amplitude, soundfile subtype or None)
FILES = {
    "a.wav": (22050, 1, 0.5, 0.5, None),
    "b.flac": (48000, 2, 0.3, 0.5, None),
    "sub/c.ogg": (22050, 4, 0.2, 0.4, None),
    "d.wav": (RATE, 2, 0.25, 1.2, "FLOAT"),  # over full scale: stored clipped to [-1, 1]
}
SIDECARS = {"a.txt": "  a sine, mono \n", "b.json": {"caption": "stereo noise"}, "sub/c.json": {"text": "four"},
            "d.txt": "loud, clipped"}
CAPTIONS = {"a.wav": "a sine, mono", "b.flac": "stereo noise", "sub/c.ogg": "four", "d.wav": "loud, clipped"}


def _signal(rate, channels, seconds, amplitude, seed):
    n = round(rate * seconds)
    t = np.arange(n) / rate
    tones = np.stack([np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], axis=1)
    noise = np.random.default_rng(seed).uniform(-1, 1, (n, channels))
    return (amplitude * (0.8 * tones + 0.2 * noise)).astype(np.float32)


def make_folder(root, sidecars=True, bad=True, order=None):
    for i, rel in enumerate(order or FILES):
        rate, channels, seconds, amplitude, subtype = FILES[rel]
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        sf.write(os.path.join(root, rel), _signal(rate, channels, seconds, amplitude, i), rate, subtype=subtype)
    if sidecars:
        for rel, caption in SIDECARS.items():
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "w") as f:
                f.write(caption if isinstance(caption, str) else json.dumps(caption))
    if bad:
        with open(os.path.join(root, "corrupt.wav"), "wb") as f:
            f.write(b"not audio at all " * 64)  # fails when probed
        sf.write(os.path.join(root, "empty.wav"), np.zeros((0, 1), np.float32), 22050)
        nan = np.full((100, 1), np.nan, np.float32)  # probes fine, fails when read
        sf.write(os.path.join(root, "nan.wav"), nan, 22050, subtype="FLOAT")
        with open(os.path.join(root, "nan.txt"), "w") as f:  # captions are checked before any audio is read
            f.write("broken")
    return root


def expected_audio(root, rel):
    audio, rate = sf.read(os.path.join(root, rel), dtype="float32", always_2d=True)
    return match_channels(resample(audio, rate, RATE), 2), audio.shape[0], rate


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    audio_dir = make_folder(str(root / "audio"))
    report = ingest(audio_dir, root / "out")
    return audio_dir, str(root / "out"), report


def test_sidecar_captions_and_report(built):
    audio_dir, out, report = built
    ds = load_audio_dataset(out)
    assert len(ds) == 4 and ds.sample_rate == RATE and ds.channels == 2
    assert [ds[i]["source_path"] for i in range(4)] == sorted(FILES)  # sorted path order
    assert {ds[i]["source_path"]: ds[i]["caption"] for i in range(4)} == CAPTIONS
    assert report["files_found"] == 7 and report["files_written"] == 4 and report["files_skipped"] == 3
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert sorted(reasons) == ["corrupt.wav", "empty.wav", "nan.wav"]
    assert "no samples" in reasons["empty.wav"] and "non-finite" in reasons["nan.wav"]
    assert report["caption_source"] == "sidecar" and report["default_captions"] == 0
    seconds = sum(round(FILES[r][2] * FILES[r][0]) / FILES[r][0] for r in FILES)
    assert report["total_hours"] == pytest.approx(seconds / 3600, rel=1e-3)
    with open(os.path.join(out, "ingest_report.json")) as f:
        assert json.load(f) == report
    assert ds.report == report
    assert not [n for n in os.listdir(os.path.dirname(out)) if "incomplete" in n]


def test_audio_round_trips(built):
    audio_dir, out, _ = built
    ds = load_audio_dataset(out)
    for i in range(len(ds)):
        item = ds[i]
        reference, frames, rate = expected_audio(audio_dir, item["source_path"])
        audio = item["audio"]
        assert audio.dtype == np.float32 and audio.shape == reference.shape
        assert abs(audio.shape[0] - frames * RATE / rate) <= 1  # resampled length: frames * target / source
        assert item["duration"] == pytest.approx(audio.shape[0] / RATE) and item["sample_rate"] == RATE
        np.testing.assert_allclose(audio, np.clip(reference, -1, 1), atol=Q, err_msg=item["source_path"])
        assert np.abs(audio).max() <= 1.0
    mono, four = ds[0]["audio"], ds[3]["audio"]
    np.testing.assert_array_equal(mono[:, 0], mono[:, 1])  # mono duplicated
    assert not np.allclose(four[:, 0], four[:, 1])  # 4 channels: the first two kept
    assert np.abs(ds[2]["audio"]).max() == pytest.approx(1.0, abs=Q)  # d.wav clipped, not wrapped
    assert ds[-1]["source_path"] == "sub/c.ogg"
    with pytest.raises(IndexError):
        ds[4]


def test_order_and_ids_are_deterministic(built, tmp_path):
    audio_dir, out, _ = built
    copy = make_folder(str(tmp_path / "audio"), order=list(reversed(FILES)))  # files created in another order
    for rel in FILES:  # identical content to the first folder
        shutil.copy(os.path.join(audio_dir, rel), os.path.join(copy, rel))
    ingest(copy, tmp_path / "out")
    first, second = load_audio_dataset(out), load_audio_dataset(tmp_path / "out")
    assert len(first) == len(second)
    for i in range(len(first)):
        a, b = first[i], second[i]
        assert (a["source_path"], a["id"], a["caption"]) == (b["source_path"], b["id"], b["caption"])
        np.testing.assert_array_equal(a["audio"], b["audio"])
    assert len({first[i]["id"] for i in range(len(first))}) == len(first)


def _manifest_folder(tmp_path):
    return make_folder(str(tmp_path / "audio"), sidecars=False, bad=False)


def test_csv_manifest(tmp_path):
    audio_dir = _manifest_folder(tmp_path)
    manifest = tmp_path / "captions.csv"
    manifest.write_text('path,caption\na.wav,"one, with a comma"\nsub/c.ogg,été\nb.flac,two\nd.wav,three\n',
                        encoding="utf-8")
    report = ingest(audio_dir, tmp_path / "out", captions=manifest, sample_rate=22050, channels=1)
    ds = load_audio_dataset(tmp_path / "out")
    got = {ds[i]["source_path"]: ds[i]["caption"] for i in range(len(ds))}
    assert got == {"a.wav": "one, with a comma", "sub/c.ogg": "été", "b.flac": "two", "d.wav": "three"}
    assert report["caption_source"] == "manifest" and report["captions_manifest"] == str(manifest)
    assert ds.sample_rate == 22050 and ds.channels == 1 and ds[0]["audio"].shape == (11025, 1)


def test_source_and_license_are_kept_counted_and_indexed(tmp_path):
    audio_dir = _manifest_folder(tmp_path)
    manifest = tmp_path / "captions.csv"
    manifest.write_text("path,caption,source,license\na.wav,one,field recording 3,CC-BY-4.0\nb.flac,two,,\n"
                        "d.wav,three,archive,CC0-1.0\nsub/c.ogg,four,archive,CC0-1.0\n", encoding="utf-8")
    report = ingest(audio_dir, tmp_path / "out", captions=manifest)
    assert report["licenses"] == {"(none given)": 1, "CC-BY-4.0": 1, "CC0-1.0": 2}
    ds = load_audio_dataset(tmp_path / "out")
    by_path = {ds[i]["source_path"]: ds[i] for i in range(len(ds))}
    assert by_path["a.wav"]["source"] == "field recording 3" and by_path["a.wav"]["license"] == "CC-BY-4.0"
    assert by_path["b.flac"]["license"] == ""
    items = {item["source_path"]: item for item in ds.items()}
    assert items["d.wav"]["license"] == "CC0-1.0" and items["d.wav"]["frames"] == by_path["d.wav"]["audio"].shape[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"path": "a.wav", "caption": "x", "license": 4}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: 'license' must be a string; got 4"):
        ingest(audio_dir, tmp_path / "out3", captions=bad, missing_caption="")


def test_jsonl_manifest_and_bad_entries(tmp_path):
    audio_dir = _manifest_folder(tmp_path)
    lines = [{"file": rel, "text": f"caption {i}"} for i, rel in enumerate(sorted(FILES))]
    manifest = tmp_path / "captions.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ingest(audio_dir, tmp_path / "out", captions=manifest)
    ds = load_audio_dataset(tmp_path / "out")
    assert [ds[i]["caption"] for i in range(4)] == [f"caption {i}" for i in range(4)]

    missing = tmp_path / "missing.csv"
    missing.write_text("path,caption\na.wav,x\nnope.wav,y\n")
    with pytest.raises(ValueError, match=r"missing\.csv:3.*nope\.wav.*does not exist"):
        ingest(audio_dir, tmp_path / "out2", captions=missing)
    partial = tmp_path / "partial.csv"
    partial.write_text("path,caption\na.wav,x\n")
    with pytest.raises(ValueError, match=r"3 audio file\(s\) have no caption.*b\.flac, d\.wav, sub/c\.ogg"):
        ingest(audio_dir, tmp_path / "out2", captions=partial)
    assert not os.path.exists(tmp_path / "out2")
    assert not [n for n in os.listdir(tmp_path) if "incomplete" in n]  # the failed build was cleaned up


def test_missing_captions_error_or_default(tmp_path):
    audio_dir = _manifest_folder(tmp_path)
    with pytest.raises(ValueError, match=r"4 audio file\(s\) have no caption.*a\.wav, b\.flac, d\.wav, sub/c\.ogg"):
        ingest(audio_dir, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")
    (tmp_path / "audio" / "a.txt").write_text("only this one")
    report = ingest(audio_dir, tmp_path / "out", missing_caption="")
    ds = load_audio_dataset(tmp_path / "out")
    assert [ds[i]["caption"] for i in range(4)] == ["only this one", "", "", ""]
    assert report["default_captions"] == 3


def test_no_usable_audio_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable audio"):
        ingest(tmp_path / "empty", tmp_path / "out")
    bad = tmp_path / "bad"
    bad.mkdir()
    sf.write(bad / "nan.wav", np.full((10, 1), np.nan, np.float32), 22050, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"no usable audio.*nan\.wav.*non-finite"):
        ingest(bad, tmp_path / "out", missing_caption="")
    assert not os.path.exists(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="stableaudio-jax ingest"):
        load_audio_dataset(tmp_path / "out")


def test_rerun_refuses_or_rebuilds_atomically(built, tmp_path, monkeypatch):
    audio_dir, _, _ = built
    out = tmp_path / "out"
    small = make_folder(str(tmp_path / "small"), bad=False, order=["a.wav"])
    (tmp_path / "small" / "a.txt").write_text("first")
    ingest(small, out)
    with pytest.raises(ValueError, match="already holds a dataset.*overwrite"):
        ingest(small, out)
    real_encode, calls = ingest_module.encode_flac, []

    def failing_encode(audio, rate):  # dies half-way through the rebuild
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real_encode(audio, rate)

    monkeypatch.setattr(ingest_module, "encode_flac", failing_encode)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest(audio_dir, out, overwrite=True)
    old = load_audio_dataset(out)  # the previous dataset is untouched
    assert len(old) == 1 and old[0]["caption"] == "first"
    monkeypatch.undo()
    ingest(audio_dir, out, overwrite=True)
    assert len(load_audio_dataset(out)) == 4
    assert sorted(os.listdir(tmp_path)) == ["out", "small"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an ingested dataset"):
        ingest(small, tmp_path / "notes", overwrite=True)  # never deletes a folder it did not write
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_sidecar_problems_are_named(tmp_path):
    audio_dir = make_folder(str(tmp_path / "audio"), sidecars=False, bad=False, order=["a.wav"])
    (tmp_path / "audio" / "a.json").write_text(json.dumps({"prompt": "x"}))
    with pytest.raises(ValueError, match=r"a\.json: no caption key caption / text"):
        ingest(audio_dir, tmp_path / "out")
    ingest(audio_dir, tmp_path / "out", sidecar_key="prompt")
    assert load_audio_dataset(tmp_path / "out")[0]["caption"] == "x"
    (tmp_path / "audio" / "a.txt").write_text("y")
    with pytest.raises(ValueError, match="keep one caption sidecar"):
        ingest(audio_dir, tmp_path / "out2")


def _cli(*argv):
    parser = argparse.ArgumentParser()
    ingest_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.run(args, [])


def test_cli_command(built, tmp_path, capsys):
    audio_dir, _, _ = built
    out = tmp_path / "out"
    assert _cli("ingest", "--audio", audio_dir, "--out", str(out), "--sample-rate", "16000", "--channels",
                "1", "--no-progress") == 0
    text = capsys.readouterr().out
    assert "Wrote 4 of 7 audio files" in text and "3 skipped" in text and str(out) in text
    ds = load_audio_dataset(out)
    assert ds.sample_rate == 16000 and ds.channels == 1 and ds[0]["audio"].shape == (8000, 1)
    with pytest.raises(ValueError, match="overwrite"):
        _cli("ingest", "--audio", audio_dir, "--out", str(out))
    bare = _manifest_folder(tmp_path)
    assert _cli("ingest", "--audio", bare, "--out", str(out), "--default-caption", "", "--overwrite") == 0
    assert "4 with the default caption" in capsys.readouterr().out
    assert [load_audio_dataset(out)[i]["caption"] for i in range(4)] == [""] * 4
