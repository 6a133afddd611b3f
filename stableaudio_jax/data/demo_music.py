"""Scores → arranged clips: the musical half of the demo data set (``data/demo_data.py`` renders and writes).

A clip is a window of a public-domain score from the music21 corpus, arranged for one General MIDI instrument:
tempo, transposition and register drawn per clip, every note of the window (melody instruments play the top
voice) as a ``pretty_midi`` track. Its caption is built from those attributes ("solo flute, a Bach chorale,
92 BPM, D minor, high register"), so that a model trained on the clips can be asked for each of them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Sequence

import numpy as np

# name → (GM program (0-based), caption phrase, lowest and highest MIDI pitch it plays, plays chords)
INSTRUMENTS = {
    "piano": (0, "solo piano", 21, 108, True),
    "strings": (48, "string ensemble", 28, 96, True),
    "flute": (73, "solo flute", 60, 96, False),
    "organ": (19, "church organ", 24, 96, True),
    "guitar": (24, "nylon-string guitar", 40, 83, True),
    "choir": (52, "choir", 40, 81, True),
    "brass": (61, "brass section", 34, 82, True),
    "marimba": (12, "marimba", 45, 96, True),
}
# corpus folder → how a caption names the piece; folders of multi-tune collections (slow to parse) are left out
STYLES = {
    "bach": "a Bach chorale",
    "palestrina": "a Palestrina mass movement",
    "ryansMammoth": "a fiddle tune",
    "monteverdi": "a Monteverdi madrigal",
    "trecento": "a medieval Italian song",
    "beethoven": "a Beethoven string quartet",
    "mozart": "a Mozart string quartet",
    "haydn": "a Haydn string quartet",
    "josquin": "a Josquin motet",
}
REGISTERS = {"low": 48, "mid": 62, "high": 74}  # target median MIDI pitch of the clip
TEMPO_RANGE = (60, 160)
TRANSPOSE_RANGE = (-5, 6)
_NAMES = {"major": ["C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"],
          "minor": ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"]}
SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class Piece:
    """A corpus score: ``path`` relative to music21's corpus; ``style`` its caption phrase."""

    path: str
    style: str

    @property
    def split(self) -> str:
        return split_of(self.path)


def split_of(piece_path: str) -> str:
    """train / valid / test by a hash of the piece (80 / 10 / 10): a piece never lands in two splits, and the
    assignment does not change when the corpus or the requested size does."""
    bucket = int(hashlib.sha256(piece_path.encode()).hexdigest()[:8], 16) % 10
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


def corpus_pieces(seed: int = 0) -> list[Piece]:
    """Every usable corpus score, shuffled by ``seed`` and interleaved across styles (so a few clips still span
    several styles)."""
    from music21 import corpus
    by_style: dict[str, list[str]] = {}
    for path in corpus.getPaths():
        relative = str(path).replace(os.sep, "/").split("/corpus/", 1)[-1]
        folder = relative.split("/", 1)[0]
        if folder in STYLES and relative.endswith((".mxl", ".xml", ".krn", ".abc", ".musicxml")):
            by_style.setdefault(folder, []).append(relative)
    rng = np.random.default_rng(seed)
    queues = {k: [v[i] for i in rng.permutation(len(v))] for k, v in sorted(by_style.items())}
    order, pieces = list(queues), []
    while any(queues.values()):
        for style in order:
            if queues[style]:
                pieces.append(Piece(queues[style].pop(), STYLES[style]))
    return pieces


def parse_notes(piece: Piece) -> tuple[np.ndarray, str | None, str | None]:
    """(notes [N, 4]: onset, duration (quarter notes), MIDI pitch, voice index; the key's tonic pitch class and
    mode (None when unknown); the title). Raises ValueError for a score without notes."""
    from music21 import corpus, stream
    score = corpus.parse(piece.path)
    if isinstance(score, stream.Opus):
        score = score.scores[0]
    parts = list(score.parts) or [score]
    notes = []
    for voice, part in enumerate(parts):
        for element in part.flatten().notes:
            for pitch in element.pitches:
                notes.append((float(element.offset), float(element.quarterLength), float(pitch.midi), float(voice)))
    if not notes:
        raise ValueError("no notes")
    try:
        key = score.analyze("key")
        tonic, mode = key.tonic.pitchClass, key.mode
    except Exception:  # a score music21 cannot analyse still makes clips, captioned without a key
        tonic, mode = None, None
    title = score.metadata.title if score.metadata is not None else None
    return np.asarray(sorted(notes), np.float64), (None if tonic is None else f"{tonic}:{mode}"), title


def key_name(tonic_mode: str | None, transpose: int) -> str | None:
    if tonic_mode is None:
        return None
    tonic, mode = tonic_mode.split(":")
    if mode not in _NAMES:
        return None
    return f"{_NAMES[mode][(int(tonic) + transpose) % 12]} {mode}"


@dataclasses.dataclass(frozen=True)
class Arrangement:
    instrument: str
    bpm: int
    transpose: int
    register: str
    start_beat: float
    velocity: int

    def caption(self, piece: Piece, key: str | None) -> str:
        parts = [INSTRUMENTS[self.instrument][1], piece.style, f"{self.bpm} BPM"]
        if key is not None:
            parts.append(key)
        return ", ".join(parts + [f"{self.register} register"])


def draw_arrangement(rng: np.random.Generator, notes: np.ndarray, seconds: float, instrument: str) -> Arrangement:
    """Random tempo, transposition, register, window start (on a beat) and loudness of a clip for ``instrument``."""
    bpm = int(rng.integers(TEMPO_RANGE[0], TEMPO_RANGE[1] + 1))
    beats = seconds * bpm / 60.0
    last = max(0.0, float(notes[:, 0].max()) - beats / 2)  # the window keeps at least half a clip of notes
    return Arrangement(instrument=instrument, bpm=bpm,
                       transpose=int(rng.integers(TRANSPOSE_RANGE[0], TRANSPOSE_RANGE[1] + 1)),
                       register=str(list(REGISTERS)[int(rng.integers(len(REGISTERS)))]),
                       start_beat=float(np.floor(rng.uniform(0.0, last + 1e-9))), velocity=int(rng.integers(72, 110)))


class InstrumentCycle:
    """Instruments in shuffled rounds: every instrument once per round, so classes stay balanced."""

    def __init__(self, instruments: Sequence[str], rng: np.random.Generator):
        self.instruments, self.rng, self.queue = list(instruments), rng, []

    def __next__(self) -> str:
        if not self.queue:
            self.queue = [self.instruments[i] for i in self.rng.permutation(len(self.instruments))]
        return self.queue.pop()


def window_notes(notes: np.ndarray, arrangement: Arrangement, seconds: float) -> np.ndarray:
    """The window's notes as [start s, end s, MIDI pitch], arranged: transposed, moved by octaves so the median
    pitch sits in the register, folded into the instrument's range; melody instruments keep the top voice."""
    _, _, low, high, chords = INSTRUMENTS[arrangement.instrument]
    beat = 60.0 / arrangement.bpm
    start = arrangement.start_beat
    selected = notes[(notes[:, 0] + notes[:, 1] > start) & (notes[:, 0] < start + seconds / beat)]
    if not chords and len(selected):
        selected = selected[selected[:, 3] == selected[:, 3].min()]
    if not len(selected):
        return np.zeros((0, 3))
    pitch = selected[:, 2] + arrangement.transpose
    pitch += 12 * np.round((REGISTERS[arrangement.register] - np.median(pitch)) / 12)
    while (pitch < low).any() or (pitch > high).any():
        pitch = np.where(pitch < low, pitch + 12, np.where(pitch > high, pitch - 12, pitch))
    onset = np.maximum(selected[:, 0] - start, 0.0) * beat
    end = np.minimum((selected[:, 0] + selected[:, 1] - start) * beat, seconds)
    keep = end - onset > 0.02
    return np.stack([onset[keep], end[keep], pitch[keep]], axis=1)


def to_midi(events: np.ndarray, arrangement: Arrangement) -> bytes:
    """A one-track MIDI file (the instrument's GM program) of ``events`` [start s, end s, pitch]."""
    import io

    import pretty_midi
    midi = pretty_midi.PrettyMIDI(initial_tempo=float(arrangement.bpm))
    track = pretty_midi.Instrument(program=INSTRUMENTS[arrangement.instrument][0])
    for start, end, pitch in events:
        track.notes.append(pretty_midi.Note(velocity=arrangement.velocity, pitch=int(pitch), start=float(start),
                                            end=float(end)))
    midi.instruments.append(track)
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()
