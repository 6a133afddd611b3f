"""The demo data set: real scores rendered offline, deterministic, captioned from their attributes, split by piece,
feeding ingest unchanged with their source and licence; broken scores are counted skips, never hangs."""
import json
import time

import numpy as np
import pytest
import soundfile as sf

from stableaudio_jax.data import demo_data, demo_music
from stableaudio_jax.data.demo_data import build_demo_data
from stableaudio_jax.data.ingest import ingest, load_audio_dataset

CLIPS, SECONDS = 12, 2.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "data"
    return root, build_demo_data(root, clips=CLIPS, seconds=SECONDS, seed=0)


def _rows(root):
    return [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()]


def test_clips_are_captioned_rendered_and_split_by_piece(demo):
    root, report = demo
    rows = _rows(root)
    assert len(rows) == CLIPS == report["clips"] and report["per_split"] == {"test": 1, "train": 10, "valid": 1}
    pieces = {split: {r["piece"] for r in rows if r["split"] == split} for split in ("train", "valid", "test")}
    assert not (pieces["train"] & pieces["valid"] or pieces["train"] & pieces["test"] or
                pieces["valid"] & pieces["test"])
    for row in rows:
        audio, rate = sf.read(root / row["path"])
        assert rate == 44100 and audio.shape == (int(SECONDS * 44100), 2)
        assert 0.7 < np.abs(audio).max() <= 0.81  # peak-normalised to 0.8
        phrase = demo_music.INSTRUMENTS[row["instrument"]][1]
        assert row["caption"].startswith(f"{phrase}, {row['style']}, {row['bpm']} BPM")
        assert row["caption"].endswith(f"{row['register']} register")
        assert row["license"].startswith("public domain") and row["soundfont"] == "TimGM6mb.sf2"
        sidecar = json.loads((root / row["path"]).with_suffix(".json").read_text())
        assert sidecar["caption"] == row["caption"] and sidecar["source"] == f"music21 corpus: {row['piece']}"
    # instruments come in balanced rounds: 10 train clips over 8 instruments, none twice before all once
    train = [r["instrument"] for r in rows if r["split"] == "train"]
    assert len(set(train[:8])) == 8


def test_the_same_seed_gives_the_same_files_and_another_seed_others(demo, tmp_path):
    root, _ = demo
    again = build_demo_data(tmp_path / "again", clips=CLIPS, seconds=SECONDS, seed=0)
    assert again["clips"] == CLIPS and _rows(tmp_path / "again") == _rows(root)
    for row in _rows(root):
        assert (tmp_path / "again" / row["path"]).read_bytes() == (root / row["path"]).read_bytes()
    other = build_demo_data(tmp_path / "other", clips=4, seconds=SECONDS, seed=1, instruments=["flute", "organ"])
    rows = _rows(tmp_path / "other")
    assert set(other["per_instrument"]) == {"flute", "organ"}
    assert sorted(r["instrument"] for r in rows if r["split"] == "train") == ["flute", "organ"]
    assert {r["caption"] for r in rows}.isdisjoint(r["caption"] for r in _rows(root))


def test_a_split_feeds_ingest_with_its_source_and_license(demo, tmp_path):
    root, _ = demo
    report = ingest(root / "train", tmp_path / "ingested")
    assert report["files_written"] == 10 and report["caption_source"] == "sidecar"
    assert report["licenses"] == {demo_data.SCORE_LICENSE: 10}
    dataset = load_audio_dataset(tmp_path / "ingested")
    item, rows = dataset[0], {r["path"].split("/")[1]: r for r in _rows(root)}
    assert item["caption"] == rows[item["source_path"]]["caption"]
    assert item["source"].startswith("music21 corpus: ") and item["license"] == demo_data.SCORE_LICENSE
    index = dataset.items()
    assert len(index) == 10 and index[0]["frames"] == int(SECONDS * 44100) and "audio" not in index[0]


def test_bad_scores_and_renders_are_counted_skips(tmp_path, monkeypatch):
    from helpers import FlakyScoreParse
    first, second = demo_music.corpus_pieces(2)[:2]
    parser = demo_data.ScoreParser(FlakyScoreParse(bad=first.path, slow=second.path, sleep=300.0), workers=1,
                                   seconds=8.0)
    # (8 s: a real parse on a loaded machine can take seconds. The hanging one sleeps 300 s: a build that waited
    # for it would exceed the 240 s bound below, which leaves room for a heavily loaded machine: 109 s once.)
    real_render = demo_data.render
    renders = {"n": 0}

    def silent_once(midi, seconds, soundfont):
        renders["n"] += 1
        audio = real_render(midi, seconds, soundfont)
        return audio * 0 if renders["n"] == 1 else audio

    monkeypatch.setattr(demo_data, "render", silent_once)
    start = time.monotonic()
    report = build_demo_data(tmp_path / "data", clips=3, seconds=1.0, seed=2, parser=parser)
    assert time.monotonic() - start < 240 and report["clips"] == 3  # the hanging score did not hang the build
    skipped = {s["piece"]: s["reason"] for s in report["skipped"]}
    assert skipped[first.path] == "ValueError: no notes"
    assert skipped[second.path] == "TimeoutError: took longer than 8 s"
    assert "ValueError: the render is silent" in skipped.values()


@pytest.mark.parametrize("kwargs,message", [
    (dict(clips=0), r"--clips 0; expected >= 1"),
    (dict(seconds=0.1), r"--seconds 0.1; expected 0.5 to 60"),
    (dict(instruments=["kazoo"]), r"instruments \['kazoo'\]; expected some of"),
    (dict(seconds=2.0, min_seconds=3.0), r"--min-seconds 3.0; expected 0.5 to --seconds \(2.0\)"),
])
def test_bad_settings_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_demo_data(tmp_path / "x", **kwargs)


def test_an_existing_folder_is_never_overwritten_by_surprise(demo, tmp_path):
    root, _ = demo
    with pytest.raises(ValueError, match="already holds a demo data set; pass --overwrite"):
        build_demo_data(root, clips=CLIPS, seconds=SECONDS)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not a demo data set"):
        build_demo_data(tmp_path / "mine", clips=2)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_the_command(tmp_path, capsys):
    from stableaudio_jax.cli import main
    assert main(["demo-data", "--out", str(tmp_path / "d"), "--clips", "3", "--seconds", "1", "--instruments",
                 "piano,marimba", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 clips of 1 s (test 1, train 1, valid 1;" in out
    # clips of varied lengths (what teaches seconds_total): each as long as its row says
    assert main(["demo-data", "--out", str(tmp_path / "v"), "--clips", "3", "--seconds", "1.5", "--min-seconds",
                 "0.6", "--instruments", "flute", "--no-progress"]) == 0
    assert "wrote 3 clips of 0.6-1.5 s" in capsys.readouterr().out
    import soundfile as sf
    rows = _rows(tmp_path / "v")
    assert all(0.6 <= r["seconds"] <= 1.5 for r in rows) and len({r["seconds"] for r in rows}) > 1
    assert all(sf.info(str(tmp_path / "v" / r["path"])).frames == round(r["seconds"] * 44100) for r in rows)
    assert main(["demo-data", "--out", str(tmp_path / "e"), "--clips", "3", "--instruments", "oboe"]) == 2
    assert "instruments ['oboe']" in capsys.readouterr().err
