"""``stableaudio-jax demo-data``: a captioned music data set made offline and deterministically from pip packages.

Scores from the music21 corpus (public-domain compositions) are arranged for a General MIDI instrument
(``data/demo_music.py``), rendered with the ``TimGM6mb.sf2`` soundfont that ``pretty_midi`` ships through the
``midirenderer`` synthesiser (no system libraries), resampled to 44.1 kHz stereo and peak-normalised. Layout:

  DIR/train/clip_00000.wav + clip_00000.json    (caption, attributes, piece, provenance and licences)
  DIR/valid/...  DIR/test/...                   split by *piece*: no piece in two splits
  DIR/captions.jsonl                            every clip: path (relative to DIR), split, caption, attributes
  DIR/demo_data_report.json                     settings, counts per split / instrument, skipped pieces + reasons

Each split folder feeds ``stableaudio-jax ingest --audio DIR/train`` unchanged (the ``.json`` sidecars carry the
caption, ``source`` and ``license``). The same settings give the same files. A score that fails to parse, a window
without notes or a render that fails or is silent is skipped and counted with its reason; parsing is bounded in
time and rendering in length, so nothing can hang.
"""
from __future__ import annotations

import collections
import io
import json
import multiprocessing
import os
from typing import Callable, Iterator, Sequence

import numpy as np

from stableaudio_jax import paths
from stableaudio_jax.audio.io import resample
from stableaudio_jax.data.demo_music import (INSTRUMENTS, SPLITS, Arrangement, InstrumentCycle, Piece,
                                             corpus_pieces, draw_arrangement, key_name, parse_notes, to_midi,
                                             window_notes)

SOUNDFONT = "TimGM6mb.sf2"
SOUNDFONT_LICENSE = "GPL-2.0 (TimGM6mb by Tim Brechbill, as shipped with pretty_midi)"
SCORE_LICENSE = "public domain (composition); encoding from the music21 corpus (BSD-3-Clause)"
REPORT_FILE = "demo_data_report.json"
CAPTIONS_FILE = "captions.jsonl"
SAMPLE_RATE = 44100
PEAK = 0.8
PARSE_SECONDS = 20  # a score that takes longer to parse is skipped
CLIPS_PER_PIECE = 2


def soundfont_bytes() -> bytes:
    import pretty_midi
    path = os.path.join(os.path.dirname(pretty_midi.__file__), SOUNDFONT)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: pretty_midi's bundled soundfont is missing; reinstall pretty_midi")
    with open(path, "rb") as f:
        return f.read()


class ScoreParser:
    """Parses scores in worker processes, in order, with a time limit per score: a score that takes longer is
    reported as a ``TimeoutError`` and its worker replaced, so no score can hang the build. Two workers also
    parse ahead while the main process renders. ``workers=0`` parses in this process (no time limit)."""

    def __init__(self, parse: Callable = parse_notes, workers: int = 2, seconds: float = PARSE_SECONDS):
        self.parse, self.workers, self.seconds, self.pool = parse, workers, seconds, None

    def _start(self):
        import multiprocessing
        # spawn: the parent may run JAX's threads, which fork would copy in an undefined state
        self.pool = multiprocessing.get_context("spawn").Pool(self.workers)

    def results(self, pieces: Iterator[Piece]):
        """(piece, (notes, key, title) or the exception) for each piece, in order."""
        if not self.workers:
            for piece in pieces:
                try:
                    yield piece, self.parse(piece)
                except Exception as e:  # music21 raises many types for scores it cannot read
                    yield piece, e
            return
        self._start()
        pending: collections.deque = collections.deque()
        try:
            while True:
                while len(pending) < 2 * self.workers and (piece := next(pieces, None)) is not None:
                    pending.append((piece, self.pool.apply_async(self.parse, (piece,))))
                if not pending:
                    return
                piece, job = pending.popleft()
                try:
                    yield piece, job.get(self.seconds)
                except multiprocessing.TimeoutError:
                    yield piece, TimeoutError(f"took longer than {self.seconds:g} s")
                    self._restart(pending)
                except Exception as e:
                    yield piece, e
        finally:
            self.pool.terminate()

    def _restart(self, pending: collections.deque) -> None:
        """A stuck worker cannot be interrupted: replace the pool and resubmit what was queued."""
        self.pool.terminate()
        self._start()
        for i, (piece, _) in enumerate(pending):
            pending[i] = (piece, self.pool.apply_async(self.parse, (piece,)))


def render(midi: bytes, seconds: float, soundfont: bytes) -> np.ndarray:
    """MIDI → float32 stereo [seconds * 44100, 2]: rendered at the synthesiser's rate, resampled, cut or padded."""
    import midirenderer
    import soundfile as sf
    audio, rate = sf.read(io.BytesIO(midirenderer.render_wave_from(soundfont, midi)), dtype="float32",
                          always_2d=True)
    audio = resample(audio[: int(np.ceil(seconds * rate))], int(rate), SAMPLE_RATE)
    length = int(round(seconds * SAMPLE_RATE))
    audio = np.pad(audio[:length], ((0, max(0, length - audio.shape[0])), (0, 0)))
    return audio if audio.shape[1] == 2 else np.repeat(audio[:, :1], 2, axis=1)


def make_clip(notes: np.ndarray, arrangement: Arrangement, seconds: float, soundfont: bytes) -> np.ndarray:
    events = window_notes(notes, arrangement, seconds)
    if not len(events):
        raise ValueError("no notes in the window")
    audio = render(to_midi(events, arrangement), seconds, soundfont)
    peak = float(np.abs(audio).max())
    if not np.isfinite(audio).all() or peak < 1e-3:
        raise ValueError("the render is silent")
    return (audio * (PEAK / peak)).astype(np.float32)


def split_quotas(clips: int) -> dict[str, int]:
    """Clips per split: 10% each for valid and test (at least one each from 3 clips on), the rest train."""
    held_out = max(1, round(0.1 * clips)) if clips >= 3 else 0
    return {"train": clips - 2 * held_out, "valid": held_out, "test": held_out}


def _check(clips: int, seconds: float, min_seconds: float | None, instruments: Sequence[str]) -> list[str]:
    if clips < 1:
        raise ValueError(f"demo-data: --clips {clips}; expected >= 1")
    if not 0.5 <= seconds <= 60:
        raise ValueError(f"demo-data: --seconds {seconds}; expected 0.5 to 60")
    if min_seconds is not None and not 0.5 <= min_seconds <= seconds:
        raise ValueError(f"demo-data: --min-seconds {min_seconds}; expected 0.5 to --seconds ({seconds})")
    unknown = sorted(set(instruments) - set(INSTRUMENTS))
    if unknown or not instruments:
        raise ValueError(f"demo-data: instruments {unknown or list(instruments)}; expected some of {list(INSTRUMENTS)}")
    return list(dict.fromkeys(instruments))


def build_demo_data(output_dir: str | os.PathLike, clips: int = 240, seconds: float = 5.0,
                    instruments: Sequence[str] = tuple(INSTRUMENTS), seed: int = 0, overwrite: bool = False,
                    progress: bool = False, parser: ScoreParser | None = None, min_seconds: float | None = None
                    ) -> dict:
    """Writes ``clips`` clips (split by piece, ~80/10/10) into ``output_dir``; returns the report. Built in a
    temporary folder and moved (or uploaded) into place when complete. ``parser``: how scores are parsed (default:
    two worker processes with a time limit per score). ``min_seconds``: clip lengths drawn uniformly from [min_seconds,
    seconds] (0.1 s steps) instead of all ``seconds`` long — clips shorter than a model's window are what teach
    timing conditioning (``seconds_total``) where the audio ends."""
    instruments = _check(clips, seconds, min_seconds, instruments)
    output_dir = paths.absolute(output_dir)
    if paths.isdir(output_dir) and paths.listdir(output_dir):
        if not paths.isfile(paths.join(output_dir, REPORT_FILE)):
            raise ValueError(f"demo-data: {output_dir} exists and is not a demo data set; choose a new folder")
        if not overwrite:
            raise ValueError(f"demo-data: {output_dir} already holds a demo data set; pass --overwrite to rebuild")
    with paths.staged_directory(output_dir, marker=REPORT_FILE) as staging:
        rows, skipped = _render(staging, clips, seconds, min_seconds, instruments, seed, parser, progress)
        report = _report(output_dir, rows, skipped, clips=clips, seconds=seconds, min_seconds=min_seconds,
                         instruments=instruments, seed=seed)
        with open(os.path.join(staging, CAPTIONS_FILE), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        with open(os.path.join(staging, REPORT_FILE), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, sort_keys=True)
    return report


def _render(staging: str, clips: int, seconds: float, min_seconds, instruments, seed: int, parser,
            progress: bool) -> tuple[list[dict], list[dict]]:
    """Renders the clips into ``staging``; (rows, skipped)."""
    from tqdm.auto import tqdm
    for split in SPLITS:
        os.makedirs(os.path.join(staging, split))
    soundfont, rng = soundfont_bytes(), np.random.default_rng(seed)
    rows, skipped, left = [], [], split_quotas(clips)
    cycles = {split: InstrumentCycle(instruments, rng) for split in SPLITS}  # balanced within every split
    bar = tqdm(total=clips, desc="demo-data", unit="clip", disable=not progress)
    # a split with its share leaves its remaining pieces unused (pieces never move between splits)
    wanted = (piece for piece in corpus_pieces(seed) if left[piece.split])
    for piece, parsed in (parser or ScoreParser()).results(wanted):
        if len(rows) >= clips:
            break
        if not left[piece.split]:
            continue
        if isinstance(parsed, BaseException):  # unreadable, empty or too slow a score: a counted skip
            skipped.append({"piece": piece.path, "reason": f"{type(parsed).__name__}: {parsed}"[:200]})
            continue
        notes, tonic_mode, title = parsed
        for _ in range(min(CLIPS_PER_PIECE, left[piece.split])):
            length = seconds if min_seconds is None else round(float(rng.uniform(min_seconds, seconds)), 1)
            arrangement = draw_arrangement(rng, notes, length, next(cycles[piece.split]))
            try:
                audio = make_clip(notes, arrangement, length, soundfont)
            except Exception as e:  # an empty window or a failed render: skipped, with its reason
                skipped.append({"piece": piece.path, "reason": f"{type(e).__name__}: {e}"[:200]})
                cycles[piece.split].queue.append(arrangement.instrument)  # its turn comes again
                continue
            rows.append(_write_clip(staging, len(rows), piece, title, tonic_mode, arrangement, audio, length))
            left[piece.split] -= 1
            bar.update(1)
    bar.close()
    if len(rows) < clips:
        raise ValueError(f"demo-data: only {len(rows)} of {clips} clips could be made ({len(skipped)} skipped)")
    return rows, skipped


def _write_clip(root: str, index: int, piece: Piece, title: str | None, tonic_mode: str | None,
                arrangement: Arrangement, audio: np.ndarray, seconds: float) -> dict:
    import soundfile as sf
    key = key_name(tonic_mode, arrangement.transpose)
    name = f"{piece.split}/clip_{index:05d}"
    sf.write(os.path.join(root, name + ".wav"), audio, SAMPLE_RATE, subtype="PCM_16")
    row = {"path": name + ".wav", "split": piece.split, "caption": arrangement.caption(piece, key),
           "instrument": arrangement.instrument, "bpm": arrangement.bpm, "key": key,
           "register": arrangement.register, "transpose": arrangement.transpose, "style": piece.style,
           "piece": piece.path, "title": title, "start_beat": arrangement.start_beat, "seconds": seconds,
           "source": f"music21 corpus: {piece.path}", "license": SCORE_LICENSE, "soundfont": SOUNDFONT,
           "soundfont_license": SOUNDFONT_LICENSE}
    with open(os.path.join(root, name + ".json"), "w", encoding="utf-8") as f:
        json.dump(row, f, indent=1, sort_keys=True)
    return row


def _report(output_dir: str, rows: list[dict], skipped: list[dict], **settings) -> dict:
    count = lambda key: {k: sum(r[key] == k for r in rows) for k in sorted({r[key] for r in rows})}  # noqa: E731
    pieces = {s: sorted({r["piece"] for r in rows if r["split"] == s}) for s in SPLITS}
    return {"output_dir": output_dir, "settings": settings, "clips": len(rows), "sample_rate": SAMPLE_RATE,
            "channels": 2, "per_split": count("split"), "per_instrument": count("instrument"),
            "pieces": {s: len(p) for s, p in pieces.items()}, "skipped": skipped,
            "licenses": {"scores": SCORE_LICENSE, "soundfont": SOUNDFONT_LICENSE}}
