"""What the speech tasks share (``speech_classification``, ``speech2text``): their options,
the TSV reader, the training stream (SpecAugment, speed perturbation) and the collation of
feature batches.

A task file is a TSV with a header (``label<TAB>audio`` or ``audio<TAB>text``); audio paths are
relative to the TSV's folder (absolute ones are taken as written). Recordings become normalised
log-mel filterbanks when the file is read (``data/audio.py``); the ``speech`` embedding of the
model subsamples them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.data.audio import (
    WINDOWS,
    Filterbank,
    normalize,
    read_wav,
    resample,
    spec_augment,
)
from pretrainkit.data.instances import RowStream
from pretrainkit.errors import ConfigError, DataError, closest
from pretrainkit.tasks.base import TaskOptions
from pretrainkit.tasks.tsv import _decode, _read_lines

log = logging.getLogger(__name__)


@dataclass
class SpeechOptions(TaskOptions):
    seq_length: int = 3000
    """Feature frames per recording (10 ms each by default); longer recordings are cut."""
    sample_rate: int = 16000
    """Rate the features are computed at; files at another rate are resampled (and counted)."""
    num_mel_bins: int = 80
    """Log-mel filters per frame; must equal the model's ``embedding.num_mel_bins``."""
    window: str = "povey"
    """Analysis window: povey (Kaldi's default), hamming or hann."""
    spec_augment: bool = False
    """SpecAugment on training instances only: two frequency and two time masks per instance."""
    freq_mask_width: int = 27
    """Widest SpecAugment frequency mask, in mel bins."""
    time_mask_width: int = 40
    """Widest SpecAugment time mask, in frames (and at most a fifth of the recording)."""
    speed_perturb: bool = False
    """Training instances at 0.9x, 1x or 1.1x speed, drawn per instance (Kaldi's speed
    perturbation: tempo and pitch change together); the recordings are read again for it."""
    vtlp: float = 0.0
    """Vocal tract length perturbation (Jaitly & Hinton, 2013) on training instances: each one's
    frequency axis is warped by a factor drawn from [1 - vtlp, 1 + vtlp] before the mel
    filters, as if a speaker with a shorter or longer vocal tract said it (0 = off; 0.1 is
    usual). The recordings are read again and their power spectra kept in memory (fft/2 values a
    frame instead of num_mel_bins)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window not in WINDOWS:
            raise ConfigError(f"window must be one of {', '.join(WINDOWS)}, got {self.window!r}")
        for name in ("sample_rate", "num_mel_bins", "freq_mask_width", "time_mask_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1000 if name == "sample_rate" else 0):
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        if not 0.0 <= self.vtlp < 0.5:
            raise ConfigError(
                f"vtlp must be in [0, 0.5) (warp factors 1 - vtlp to 1 + vtlp), got {self.vtlp}"
            )
        self.vtlp = float(self.vtlp)
        # Mask widths without SpecAugment would be ignored: other than the defaults (which
        # older task.json files record) they are an error.
        widths = {"freq_mask_width": 27, "time_mask_width": 40}
        changed = [name for name, default in widths.items() if getattr(self, name) != default]
        if changed and not self.spec_augment:
            verb = "apply" if len(changed) > 1 else "applies"
            raise ConfigError(
                f"{' and '.join(changed)} {verb} to SpecAugment only; add --spec-augment"
            )

    def filterbank(self) -> Filterbank:
        return Filterbank(self.sample_rate, self.num_mel_bins, window=self.window)


@dataclass
class SpeechData:
    """The rows of a speech task file.

    Attributes:
        path: the TSV file read.
        audio: each row's audio path as written.
        features: each row's normalised log-mel features ``[frames, num_mel_bins]`` (float32).
        labels: each row's label (``speech_classification``), or None.
        texts: each row's transcript (``speech2text``), or None.
        first_line: the line of the file that holds row 0.
    """

    path: Path
    audio: list[str]
    features: list[np.ndarray]
    labels: list[str] | None = None
    texts: list[str] | None = None
    first_line: int = 2

    def __len__(self) -> int:
        return len(self.audio)


def read_speech_tsv(
    path: str | Path, answer: str, require_answer: bool, options: SpeechOptions
) -> SpeechData:
    """Read a TSV whose header holds ``audio`` and ``answer`` (``label`` or ``text``) and compute
    every recording's features; ``answer`` may be absent without ``require_answer``.

    Raises:
        DataError: naming the TSV and line: a bad header, a row with the wrong number of fields,
            an empty answer or audio path, or an audio file that is missing, not a PCM WAV or
            shorter than one frame (the message names that file too).
    """
    path = Path(path)
    raw = _read_lines(path)
    if raw[-1] == b"":
        raw.pop()  # the newline ending the last row
    expected = f"a header audio<TAB>{answer}"
    if not raw:
        raise DataError(f"file is empty; expected {expected}", path)
    header = _decode(raw[0], path, 1).lstrip("\ufeff").split("\t")
    allowed = ("audio", answer)
    for name in header:
        if name not in allowed or header.count(name) > 1:
            why = "appears twice" if name in allowed else f"is unknown{closest(name, allowed)}"
            raise DataError(f"column {name!r} {why}; expected {expected}", path, 1)
    if "audio" not in header or (require_answer and answer not in header):
        raise DataError(f"the header lacks a column; expected {expected}", path, 1)
    if len(raw) == 1:
        raise DataError("the file has a header but no rows", path, 2)
    bank = options.filterbank()
    columns: dict[str, list[str]] = {name: [] for name in header}
    features: list[np.ndarray] = []
    resampled, mixed, cut = set(), 0, 0
    for number, line in enumerate(raw[1:], start=2):
        fields = _decode(line, path, number).split("\t")
        if len(fields) != len(header):
            raise DataError(
                f"expected {len(header)} tab-separated fields ({', '.join(header)}), "
                f"got {len(fields)}",
                path,
                number,
            )
        for name, value in zip(header, fields):
            if not value.strip():
                raise DataError(f"the {name} is empty", path, number)
            columns[name].append(value)
        try:
            audio = read_wav(path.parent / fields[header.index("audio")], options.sample_rate)
        except DataError as error:  # the audio file's own error, placed at its row
            raise DataError(f"audio file {error}", path, number) from None
        if audio.source_rate != audio.sample_rate:
            resampled.add(audio.source_rate)
        mixed += audio.channels > 1
        try:
            row = normalize(bank(audio.samples))
        except ConfigError as error:
            raise DataError(
                f"audio {fields[header.index('audio')]}: {error}", path, number
            ) from None
        cut += row.shape[0] > options.seq_length
        features.append(row[: options.seq_length].numpy())
    rows = len(features)
    if resampled:
        rates = ", ".join(f"{r} Hz" for r in sorted(resampled))
        log.info("%s: recordings at %s resampled to %d Hz", path, rates, options.sample_rate)
    if mixed:
        log.info(
            "%s: %d of %d recordings had several channels, averaged to mono", path, mixed, rows
        )
    if cut:
        log.info(
            "%s: %d of %d recordings cut to seq_length %d frames",
            path,
            cut,
            rows,
            options.seq_length,
        )
    return SpeechData(
        path,
        columns["audio"],
        features,
        columns.get("label"),
        columns.get("text") if answer == "text" else None,
    )


class SpeechStream(RowStream):
    """Endless stream of ``{input_features, labels}`` instances, reshuffled every epoch. The
    speed (``speed_perturb``), the VTLP warp factor (``vtlp``) and the SpecAugment masks
    (``spec_augment``) of an instance are drawn from (seed, epoch, slot), so a resumed run sees
    the same ones."""

    def __init__(
        self,
        data: SpeechData,
        labels: Sequence[Any],
        options: SpeechOptions,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.start(len(data), seed, rank, world_size, data.path)
        self.data, self.labels, self.options = data, labels, options
        self.seq_length = options.seq_length
        # With VTLP the variants hold power spectra, turned into features per instance.
        self.bank = options.filterbank() if options.vtlp else None
        speeds = SPEEDS if options.speed_perturb else ()
        self.variants = [_perturbed(data, options, 1.0)] if options.vtlp else [data.features]
        self.variants += [_perturbed(data, options, speed) for speed in speeds]

    def __next__(self) -> dict[str, np.ndarray]:
        epoch, slot, row = self.order.current()
        self.order.advance()
        rng = np.random.default_rng([self.seed, epoch, slot])
        variant = int(rng.integers(len(self.variants))) if len(self.variants) > 1 else 0
        features = torch.from_numpy(self.variants[variant][row])
        if self.bank is not None:
            vtlp = self.options.vtlp
            warp = float(rng.uniform(1.0 - vtlp, 1.0 + vtlp))
            features = normalize(self.bank.log_mel(features, warp))[: self.seq_length]
        if self.options.spec_augment:
            features = spec_augment(
                features,
                rng,
                freq_width=self.options.freq_mask_width,
                time_width=self.options.time_mask_width,
            )
        return {"input_features": features.numpy(), "labels": np.asarray(self.labels[row])}


SPEEDS = (0.9, 1.1)


def _perturbed(data: SpeechData, options: SpeechOptions, speed: float) -> list[np.ndarray]:
    """Every row's features at ``speed`` (its whole power spectrum, float32, when
    ``options.vtlp`` is set): the recording read again and resampled as if it had been recorded
    at ``speed`` times the rate (shorter and higher for speed > 1)."""
    bank, rate = options.filterbank(), options.sample_rate
    out = []
    for row, audio in enumerate(data.audio):
        try:
            samples = read_wav(data.path.parent / audio, rate).samples
        except DataError as error:  # changed since it was read
            raise DataError(f"audio file {error}", data.path, row + data.first_line) from None
        try:
            power = bank.power(resample(samples, round(rate * speed), rate))
        except ConfigError as error:  # sped up below one frame
            raise DataError(
                f"audio {audio} at speed {speed}: {error}", data.path, row + data.first_line
            ) from None
        # Normalised over the whole recording, then cut, as read_speech_tsv does; so spectra
        # are kept whole and cut once turned into features.
        if options.vtlp:
            out.append(power.float().numpy())
        else:
            out.append(normalize(bank.log_mel(power))[: options.seq_length].numpy())
    return out


def collate_features(instances: list[dict[str, np.ndarray]], pad_id: int = 0) -> dict[str, Any]:
    """``input_features`` padded with zeros to the longest ``[b, frames, bins]`` with their
    ``attention_mask`` ``[b, frames]``; 0-d labels stacked to ``[b]``, label sequences padded
    with -100 to ``[b, t]``. (``pad_id`` is unused: features and ignored labels have their own
    padding.)"""
    if not instances:
        raise ValueError("cannot collate an empty list of instances")
    lengths = [len(inst["input_features"]) for inst in instances]
    bins = instances[0]["input_features"].shape[1]
    features = np.zeros((len(instances), max(lengths), bins), np.float32)  # [b, f, m]
    for row, inst in enumerate(instances):
        features[row, : lengths[row]] = inst["input_features"]
    mask = np.arange(max(lengths))[None, :] < np.asarray(lengths)[:, None]  # [b, f]
    batch = {
        "input_features": torch.from_numpy(features),
        "attention_mask": torch.from_numpy(mask.astype(np.int64)),
    }
    if "labels" in instances[0]:
        labels = [np.asarray(inst["labels"]) for inst in instances]
        if labels[0].ndim == 0:
            batch["labels"] = torch.from_numpy(np.stack(labels).astype(np.int64))  # [b]
        else:
            padded = np.full((len(labels), max(len(x) for x in labels)), -100, np.int64)
            for row, value in enumerate(labels):
                padded[row, : len(value)] = value
            batch["labels"] = torch.from_numpy(padded)  # [b, t]
    return batch


def check_feature_width(base: Any, num_mel_bins: int) -> None:
    """A ConfigError unless ``base`` reads log-mel features ``num_mel_bins`` wide (a ``speech``
    embedding with ``embedding.num_mel_bins`` equal to the task's option)."""
    if getattr(base.embedding, "token_part", None) != "speech":
        raise ConfigError(
            "speech tasks need a model whose embedding reads audio features (embedding part "
            f"'speech'); this one's token part is {getattr(base.embedding, 'token_part', '?')!r}"
        )
    width = getattr(base.config.embedding, "num_mel_bins", None)
    if width != num_mel_bins:
        raise ConfigError(
            f"num_mel_bins {num_mel_bins} differs from the model's embedding.num_mel_bins "
            f"{width}: set --num-mel-bins {width}"
        )


def feature_batches(data: SpeechData, batch_size: int) -> Iterator[dict[str, Any]]:
    """Model inputs of the rows in file order, without labels; the last batch may be short."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(data), batch_size):
        rows = data.features[start : start + batch_size]
        yield collate_features([{"input_features": row} for row in rows])
