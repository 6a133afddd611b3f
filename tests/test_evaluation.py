"""The evaluation's parts on signals with known answers: metrics, the instrument classifier and its validation."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from stableaudio_jax.audio import metrics
from stableaudio_jax.evaluation.classifier import InstrumentClassifier, clip_features
from stableaudio_jax.evaluation.evaluate import (JUDGES, load_split, train_classifier, validate_classifier,
                                                 write_report)

RATE = 16000


def _tone(freq, seconds=1.0, rate=RATE, harmonics=(1.0,), decay=0.0):
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(a * np.sin(2 * np.pi * freq * (k + 1) * t) for k, a in enumerate(harmonics))
    return (0.5 * wave * np.exp(-decay * (t % 0.25)))[:, None].astype(np.float32)


def test_si_sdr_is_scale_invariant_and_falls_with_noise():
    ref = _tone(440)
    assert metrics.si_sdr(ref, ref) > 100 and metrics.si_sdr(0.3 * ref, ref) > 100
    noisy = ref + 0.05 * np.random.default_rng(0).standard_normal(ref.shape)
    assert 15 < metrics.si_sdr(noisy, ref) < 30
    with pytest.raises(ValueError, match="differ"):
        metrics.si_sdr(ref[:10], ref)


def test_spectral_distances_are_zero_for_identical_audio():
    ref = _tone(440, harmonics=(1.0, 0.5))
    assert metrics.mel_distance(ref, ref, RATE) == 0.0 == metrics.stft_distance(ref, ref)
    assert metrics.stft_distance(_tone(660), ref) > 1 and metrics.mel_distance(_tone(660), ref, RATE) > 1
    with pytest.raises(ValueError, match="too short for an FFT of 1024"):
        metrics.stft_distance(ref[:400], ref[:400])


@pytest.mark.parity
@pytest.mark.parametrize("rate,channels", [(16000, 1), (44100, 2)])
def test_autoencoder_metrics_match_auraloss(rate, channels):
    """SI-SDR, the multi-resolution STFT distance and the mel distance equal auraloss' SISDRLoss (negated),
    MultiResolutionSTFTLoss() and MelSTFTLoss(rate) with their defaults, the definitions behind the Stable Audio
    papers' autoencoder tables: a reconstruction-like pair (a tone with harmonics against a filtered, noisy copy)
    and an unrelated pair."""
    import auraloss
    import torch
    rng = np.random.default_rng(channels)
    seconds = 0.75
    reference = np.concatenate([_tone(220 * (c + 1), seconds, rate, (1.0, 0.4, 0.2), decay=3.0)
                                for c in range(channels)], axis=1)
    close = np.convolve(reference[:, 0], [0.6, 0.3, 0.1], "same")[:, None] + 0.02 * rng.standard_normal(
        reference.shape)
    far = 0.3 * rng.standard_normal(reference.shape)
    torch_of = lambda a: torch.tensor(np.asarray(a, np.float32).T[None])  # noqa: E731  [1, channels, samples]
    for estimate in (close, far):
        x, y = torch_of(estimate), torch_of(reference)
        expected = {"si_sdr": -float(auraloss.time.SISDRLoss()(x, y)),
                    "stft": float(auraloss.freq.MultiResolutionSTFTLoss()(x, y)),
                    "mel": float(auraloss.freq.MelSTFTLoss(rate)(x, y))}
        ours = {"si_sdr": metrics.si_sdr(estimate, reference), "stft": metrics.stft_distance(estimate, reference),
                "mel": metrics.mel_distance(estimate, reference, rate)}
        for name, value in expected.items():
            assert ours[name] == pytest.approx(value, rel=1e-4, abs=1e-5), (name, ours[name], value)


def test_tempo_of_a_click_track_and_its_octave():
    audio = np.zeros((RATE * 8, 1), np.float32)
    rng = np.random.default_rng(0)
    for beat in np.arange(0, 8, 0.5):  # 120 BPM of decaying noise bursts
        start = int(beat * RATE)
        audio[start:start + 800, 0] = rng.standard_normal(800) * np.exp(-np.arange(800) / 100)
    result = metrics.tempo_error(audio, RATE, 120)
    assert abs(result["estimated_bpm"] - 120) < 6 and result["within_8_percent"]
    assert metrics.tempo_error(audio, RATE, 60)["within_8_percent"]  # half tempo: an octave, accepted
    assert not metrics.tempo_error(audio, RATE, 90)["within_8_percent"]


def test_tail_energy_sees_a_clip_that_stops():
    audio = _tone(220, 2.0)
    stopped = audio.copy()
    stopped[RATE:] = 0
    assert metrics.tail_energy_db(stopped, RATE, 1.0) < -100 and abs(metrics.tail_energy_db(audio, RATE, 1.0)) < 1
    with pytest.raises(ValueError, match="must fall inside the clip"):
        metrics.tail_energy_db(audio, RATE, 5.0)


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((400, 4)), rng.standard_normal((400, 4))
    assert metrics.frechet_distance(a, b) < 0.1 < metrics.frechet_distance(a, b + 1.0)
    assert abs(metrics.frechet_distance(a, b + 1.0) - 4.0) < 0.3  # |mean difference|^2
    with pytest.raises(ValueError, match="expected"):
        metrics.frechet_distance(a[:1], b)


def _instrument(name, freq, rng):
    """Two 'instruments' with different timbre (harmonics, attack) at random pitches."""
    freq = freq * 2 ** (rng.integers(-5, 6) / 12)
    if name == "reed":
        return _tone(freq, 2.0, harmonics=(1.0, 0.8, 0.6, 0.5, 0.4))
    return _tone(freq, 2.0, harmonics=(1.0, 0.1), decay=12.0)


def _fake_demo(root, per_split=(12, 4, 4), shuffle_labels=False):
    rng = np.random.default_rng(1)
    rows = []
    for split, count in zip(("train", "valid", "test"), per_split):
        (root / split).mkdir(parents=True)
        for i in range(count):
            name = ("reed", "bell")[i % 2]
            label = ("reed", "bell")[int(rng.integers(2))] if shuffle_labels else name
            path = f"{split}/clip_{len(rows):03d}.wav"
            sf.write(root / path, _instrument(name, 330, rng), RATE)
            rows.append({"path": path, "split": split, "caption": f"{label}, 100 BPM", "instrument": label,
                         "bpm": 100})
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_classifier_learns_timbre_saves_and_embeds(tmp_path):
    root = _fake_demo(tmp_path / "demo")
    classifier, report = train_classifier(root)
    assert report["held_out_accuracy"] == 1.0 and report["train_clips"] == 12 and classifier.labels == ["bell", "reed"]
    assert report["confusion"] == {"bell": {"bell": 4, "reed": 0}, "reed": {"bell": 0, "reed": 4}}  # valid + test
    clips = load_split(root, "test")
    feats = [clip_features(c.audio, c.sample_rate) for c in clips]
    assert feats[0].shape[0] == 2  # one row per second
    loaded = InstrumentClassifier.load(classifier.save(tmp_path / "classifier.npz"))
    np.testing.assert_allclose(loaded.log_probabilities(feats), classifier.log_probabilities(feats))
    assert loaded.embed(feats).shape == (4, 64)
    with pytest.raises(ValueError, match="not a saved instrument classifier"):
        InstrumentClassifier.load(tmp_path / "demo" / "captions.jsonl")


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_a_judge_below_the_bar_is_refused(tmp_path, kind):
    root = _fake_demo(tmp_path / "demo", shuffle_labels=True)  # labels unrelated to the sound
    with pytest.raises(ValueError, match=rf"the {kind} instrument judge reaches \d+\.\d% on 8 held-out renders .* "
                                         "below the 95%"):
        train_classifier(root, kind=kind)


def test_the_linear_judge_learns_timbre_saves_and_loads(tmp_path):
    from stableaudio_jax.evaluation.linear_judge import LinearJudge
    root = _fake_demo(tmp_path / "demo")
    judge, report = train_classifier(root, kind="linear")
    assert report["held_out_accuracy"] == 1.0 and report["kind"] == "linear" and judge.labels == ["bell", "reed"]
    clips = [c.audio for c in load_split(root, "test")]
    loaded = LinearJudge.load(judge.save(tmp_path / "linear.npz"))
    assert loaded.predict_audio(clips, RATE) == judge.predict_audio(clips, RATE) == ["reed", "bell"] * 2
    with pytest.raises(ValueError, match="not a saved linear instrument judge"):
        LinearJudge.load(tmp_path / "demo" / "captions.jsonl")


def test_loaded_judges_are_validated_in_every_run_and_refused_below_the_bar(tmp_path):
    """evaluate's judges from --classifier FILE (the MLP's; the linear one's beside it) are checked on this data's
    held-out renders as fresh ones are: accuracy and confusion go into the report; a judge whose labels are swapped
    (always wrong) is refused before it judges anything, and the error names its file."""
    import dataclasses

    from stableaudio_jax.evaluation.linear_judge import LinearJudge
    from stableaudio_jax.evaluation.run import _judges, judge_paths
    root = _fake_demo(tmp_path / "demo")
    files = judge_paths(str(tmp_path / "good.npz"))
    assert files == {"mlp": str(tmp_path / "good.npz"), "linear": str(tmp_path / "good_linear.npz")}
    notes = []
    judges, reports = _judges(files["mlp"], str(root), notes, RATE, 1)  # trained and saved: no files yet
    assert set(judges) == {"mlp", "linear"} and all(os.path.isfile(f) for f in files.values())
    assert "trained on 12 clips" in notes[0] and "trained on 12 clips" in notes[1]
    notes = []
    judges, reports = _judges(files["mlp"], str(root), notes, RATE, 1)  # loaded, and validated again
    for kind, report in reports.items():
        assert report["path"] == files[kind] and report["held_out_accuracy"] == 1.0
        assert report["held_out_clips"] == 8 and report["confusion"]["bell"] == {"bell": 4, "reed": 0}
    assert all("loaded; validated in this run: 100.0%" in note for note in notes)
    for kind, cls in (("mlp", InstrumentClassifier), ("linear", LinearJudge)):
        bad = tmp_path / f"bad_{kind}"
        loaded = cls.load(files[kind])
        for k, where in judge_paths(str(bad / "judge.npz")).items():
            judge = JUDGES[k].load(files[k])
            os.makedirs(bad, exist_ok=True)
            (dataclasses.replace(judge, labels=judge.labels[::-1]) if k == kind else judge).save(where)
        with pytest.raises(ValueError, match=rf"bad_{kind}/judge\w*.npz: the {kind} instrument judge reaches 0.0% on "
                                             "8 held-out renders .* below the 95%"):
            _judges(str(bad / "judge.npz"), str(root), [], RATE, 1)
        other = dataclasses.replace(loaded, labels=["bell", "organ"])
        with pytest.raises(ValueError, match=rf"the {kind} instrument judge knows \['bell', 'organ'\]; .* also "
                                             r"has \['reed'\]"):
            validate_classifier(other, root, sample_rate=RATE, channels=1, source="x")


def test_report_tables(tmp_path):
    result = {"model": "m", "sections": {"prompt adherence": {"trained": {"instrument_accuracy": 0.5, "clips": 4},
                                                              "untrained": {"instrument_accuracy": 0.25}}},
              "notes": ["a note"]}
    json_path, md_path = write_report(result, tmp_path)
    text = open(md_path).read()
    assert "| trained | 4 | 0.5 |" in text and "| untrained | n/a | 0.25 |" in text and "- a note" in text
    assert json.load(open(json_path))["model"] == "m"
    with pytest.raises(ValueError, match="no clips"):
        load_split(_fake_demo(tmp_path / "d2", per_split=(2, 0, 0)), "test")


def test_generations_get_one_call_per_batch_cut_to_each_clip_with_a_progress_bar(capsys):
    """generate_for: fixed-size batches (the last padded with its last clip: one compiled sampler), each clip's
    audio cut to its own length, seeds per batch, the guidance scale asked for, and a named progress bar over the
    batches when asked."""
    from stableaudio_jax.evaluation.evaluate import Clip, generate_for

    class Pipe:
        sample_rate, window_seconds, calls, cfg_scales = 100, 1.0, [], []

        def generate(self, prompts, seconds_total, steps, seed, cfg_scale):
            self.calls.append((list(prompts), seed))
            self.cfg_scales.append(cfg_scale)
            return np.ones((len(prompts), 100, 2), np.float32) * seed

    clips = [Clip(f"{i}.wav", f"clip {i}", "piano", 90, np.zeros((40 + 10 * i, 2), np.float32), 100)
             for i in range(5)]
    out = generate_for(Pipe(), clips, steps=3, seed=7, batch=2, progress="generate (trained model)")
    assert [a.shape[0] for a in out] == [40, 50, 60, 70, 80]
    assert [seed for _, seed in Pipe.calls] == [7, 9, 11] and Pipe.calls[-1][0] == ["clip 4", "clip 4"]
    assert float(out[2][0, 0]) == 9.0  # the second batch's seed
    bar = capsys.readouterr().err
    assert "generate (trained model)" in bar and "3/3" in bar
    generate_for(Pipe(), clips, steps=3, seed=7, batch=2, cfg_scale=1.0)
    assert capsys.readouterr().err == ""
    assert Pipe.cfg_scales == [None] * 3 + [1.0] * 3  # the model's own guidance unless one is asked for


def test_the_detected_end_is_where_the_sound_stops():
    audio = _tone(330, 2.0)
    audio[int(1.3 * RATE):] *= 1e-3  # -60 dB after 1.3 s: below the -40 dB threshold
    assert metrics.detected_end(audio, RATE) == pytest.approx(1.3, abs=0.021)  # to a 20 ms frame
    assert metrics.detected_end(_tone(330, 2.0), RATE) == pytest.approx(2.0)
    assert metrics.detected_end(np.zeros((RATE, 1)), RATE) == 0.0
    faded = _tone(330, 2.0)
    faded[int(0.5 * RATE):] *= 0.05  # -26 dB: quieter, still sound
    assert metrics.detected_end(faded, RATE) == pytest.approx(2.0)


def test_bootstrap_intervals_cover_the_mean_and_narrow_with_more_clips():
    rng = np.random.default_rng(0)
    few, many = rng.standard_normal(12) + 3.0, rng.standard_normal(400) + 3.0
    low, high = metrics.bootstrap_interval(few)
    assert low < few.mean() < high
    wide, narrow = high - low, np.subtract(*metrics.bootstrap_interval(many)[::-1])
    assert narrow < 0.4 * wide and metrics.bootstrap_interval(many)[0] < 3.0 < metrics.bootstrap_interval(many)[1]
    assert metrics.bootstrap_interval(few) == metrics.bootstrap_interval(few)  # seeded: reproducible
    assert metrics.bootstrap_interval([1.0]) is None
    correct = np.array([1.0] * 9 + [0.0] * 3)  # 9 of 12 right: an accuracy's interval
    low, high = metrics.bootstrap_interval(correct)
    assert 0.4 < low < 0.75 < high <= 1.0


def test_summaries_and_tables_carry_each_mean_with_its_interval(tmp_path):
    from stableaudio_jax.evaluation.evaluate import summarize
    summary = summarize([{"accuracy": 1.0}, {"accuracy": 0.0}, {"accuracy": 1.0}, {"accuracy": 1.0}])
    assert summary["clips"] == 4 and summary["accuracy"] == 0.75 and len(summary["accuracy_ci95"]) == 2
    result = {"model": "m", "sections": {"prompt adherence": {"trained": summary},
                                         "timing control": {"trained": {"seconds_total": [0.2, 0.8]}}}}
    text = open(write_report(result, tmp_path)[1]).read()
    low, high = summary["accuracy_ci95"]
    assert f"| 0.75 [{low:.3g}, {high:.3g}] |" in text
    assert "accuracy_ci95" not in text and "| 0.2–0.8 |" in text


def test_timing_asks_for_lengths_spread_over_the_window_and_checks_each_end():
    """timing_metrics: every prompt asked for its own length between 20 % and 80 % of the window, batches of at
    most one prompt per clip (generate_for's compiled sampler), the tail energy and the detected end per clip."""
    from stableaudio_jax.evaluation.evaluate import Clip, timing_metrics

    class Pipe:  # a model that obeys seconds_total for every prompt but the first of each call
        sample_rate, window_seconds, calls = 1000, 4.0, []

        def generate(self, prompts, seconds_total, steps, seed, return_latents):
            self.calls.append((list(prompts), list(seconds_total)))
            t = np.arange(4000) / 1000
            audio = np.stack([np.sin(2 * np.pi * 50 * t) * (t < (s if i else 4.0)) for i, s in
                              enumerate(seconds_total)])[..., None].astype(np.float32)
            return None, audio

        def decode(self, latents):
            return list(latents)

    clips = [Clip(f"{i}.wav", f"clip {i}", "piano", 90, np.zeros((100, 1), np.float32), 1000) for i in range(3)]
    result = timing_metrics(Pipe(), clips, steps=2, seed=0, prompts=7)
    asked = [s for _, seconds in Pipe.calls for s in seconds]
    assert [len(p) for p, _ in Pipe.calls] == [3, 3, 3] and asked[:7] == pytest.approx(
        [0.8 + 0.4 * i for i in range(7)])  # 20 % .. 80 % of 4 s
    assert [p for p, _ in Pipe.calls][0] == ["clip 0", "clip 1", "clip 2"]
    assert result["clips"] == 7 and result["seconds_total"] == pytest.approx([0.8, 3.2])
    # the first prompt of each call (3 of 7) plays on to the window's end
    assert result["end_within_0_25_s"] == pytest.approx(4 / 7) and len(result["end_within_0_25_s_ci95"]) == 2
    assert -80 < result["tail_energy_db"] < -50  # about -117 dB for the 4 that stop, 0 dB for the 3 that play on


def test_a_generated_clip_is_right_only_when_both_judges_say_so():
    from stableaudio_jax.evaluation.evaluate import Clip, adherence_metrics

    class Judge:
        def __init__(self, says):
            self.says = says

        def features(self, audio, rate):
            return np.zeros((1, 3))

        def predict(self, features):
            return self.says

        def embed(self, features):
            return np.random.default_rng(len(features)).standard_normal((len(features), 3))

    clips = [Clip(f"{i}.wav", "c", "reed", 120, _tone(330), RATE) for i in range(4)]
    judges = {"mlp": Judge(["reed", "reed", "bell", "bell"]), "linear": Judge(["reed", "bell", "reed", "bell"])}
    result = adherence_metrics([c.audio for c in clips], clips, judges, np.zeros((4, 3)) + 0.5, RATE)
    assert result["instrument_accuracy_mlp"] == 0.5 == result["instrument_accuracy_linear"]
    assert result["instrument_accuracy"] == 0.25 and result["clips"] == 4  # only the first: both right
    assert len(result["frechet_distance_ci95"]) == 2 and result["frechet_distance"] > 0
