"""Audio for the speech tasks: WAV files → mono waveforms → Kaldi-style log-mel filterbanks,
per-utterance mean/variance normalisation and SpecAugment masks. No torchaudio: the standard
library's ``wave`` reads the files and torch computes the features.

The filterbank follows Kaldi's ``compute-fbank-feats`` (and so torchaudio's
``compliance.kaldi.fbank`` and transformers' ``Speech2TextFeatureExtractor``): 25 ms frames every
10 ms without padding at the edges, per-frame DC removal, pre-emphasis 0.97, the *povey* window
(a Hann window to the power 0.85: Kaldi's default, and what Speech2Text checkpoints were trained
on), a power spectrum over the next power-of-two FFT, triangular filters spaced on Kaldi's mel
scale from 20 Hz to Nyquist, and the natural log floored at float32's epsilon. Samples are scaled
to the 16-bit integer range first, as Kaldi reads them, so the log energies match its numbers.
"""

from __future__ import annotations

import io
import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pretrainkit.errors import ConfigError, DataError
from pretrainkit.fileio import read_input

WINDOWS = ("povey", "hamming", "hann")
# Kaldi's floor before the log: float32 epsilon, written out so that importing this module (the
# CLI builds its parser from the task modules) does not load numpy.
_LOG_FLOOR = 2.0**-23
_STD_FLOOR = 1e-5  # a silent (constant) band would divide by zero


@dataclass
class Audio:
    """A decoded recording.

    Attributes:
        samples: mono float32 samples in [-1, 1), ``[n]``.
        sample_rate: samples per second of ``samples``.
        source_rate: the file's own rate (differs from ``sample_rate`` after resampling).
        channels: the file's channels (more than one: they were averaged into ``samples``).
    """

    samples: np.ndarray
    sample_rate: int
    source_rate: int
    channels: int


def read_wav(path: str | Path, sample_rate: int | None = None) -> Audio:
    """Read a PCM WAV file (8-, 16-, 24- or 32-bit integer samples) as mono float32.

    Several channels are mixed down by averaging them (speech is the same on every channel; an
    error would refuse most phone and studio recordings for nothing). With ``sample_rate`` set, a
    file at another rate is resampled to it (``resample``); the caller counts and logs both.

    Raises:
        DataError: naming ``path``: missing or unreadable, not a WAV file, a compressed or
            floating-point WAV, or no samples.
    """
    data = read_input(path, "audio file")
    try:
        with wave.open(io.BytesIO(data)) as file:
            channels, width = file.getnchannels(), file.getsampwidth()
            rate, frames = file.getframerate(), file.readframes(file.getnframes())
    except (wave.Error, EOFError, ValueError) as error:
        raise DataError(f"not a PCM WAV file ({error or 'truncated header'})", path) from None
    if width not in (1, 2, 3, 4) or channels < 1 or rate < 1:
        raise DataError(f"unsupported WAV: {width}-byte samples, {channels} channels", path)
    samples = _pcm_to_float(frames, width)
    usable = len(samples) - len(samples) % channels  # a truncated last frame is dropped
    if usable == 0:
        raise DataError("the WAV file holds no samples", path)
    mono = samples[:usable].reshape(-1, channels).mean(axis=1, dtype=np.float32)
    out = Audio(mono, rate, rate, channels)
    if sample_rate is not None and sample_rate != rate:
        out.samples, out.sample_rate = resample(mono, rate, sample_rate), sample_rate
    return out


def _pcm_to_float(frames: bytes, width: int) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 3:  # 24-bit: widen each little-endian triple into an int32
        raw = np.frombuffer(frames[: len(frames) // 3 * 3], np.uint8).reshape(-1, 3)
        wide = np.zeros((len(raw), 4), np.uint8)
        wide[:, 1:] = raw
        return wide.view("<i4")[:, 0].astype(np.float32) / 2.0**31
    kind = "<i2" if width == 2 else "<i4"
    return np.frombuffer(frames[: len(frames) // width * width], kind).astype(np.float32) / (
        2.0 ** (8 * width - 1)
    )


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """``samples`` at ``target_rate``, by band-limited (FFT) interpolation: the spectrum is cut
    or zero-extended to the new length, so nothing above the lower Nyquist frequency folds back.
    Exact for periodic signals; the edges of others see a little ringing."""
    if source_rate == target_rate:
        return samples
    length = max(1, round(len(samples) * target_rate / source_rate))
    spectrum = torch.fft.rfft(torch.from_numpy(np.asarray(samples, np.float64)))
    bins = length // 2 + 1
    kept = torch.zeros(bins, dtype=spectrum.dtype)
    share = min(bins, spectrum.shape[0])
    kept[:share] = spectrum[:share]
    out = torch.fft.irfft(kept, n=length) * (length / len(samples))
    return out.numpy().astype(np.float32)


class Filterbank:
    """Kaldi-style log-mel filterbank features of one waveform (see the module docstring).

    Args:
        sample_rate: of the waveforms given (8000 or 16000 typically).
        num_mel_bins: filters, i.e. features per frame.
        frame_length_ms: window length.
        frame_shift_ms: hop between frames.
        low_frequency: lowest edge of the first filter, in Hz.
        preemphasis: coefficient of ``x[t] - c * x[t - 1]`` (0 = off).
        window: ``povey`` (Kaldi's default), ``hamming`` or ``hann``.
    """

    def __init__(
        self,
        sample_rate: int,
        num_mel_bins: int = 80,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        low_frequency: float = 20.0,
        preemphasis: float = 0.97,
        window: str = "povey",
    ):
        if window not in WINDOWS:
            raise ConfigError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
        if sample_rate < 1000 or num_mel_bins < 1 or frame_shift_ms <= 0:
            raise ConfigError(
                f"filterbank: sample_rate {sample_rate} must be >= 1000, num_mel_bins "
                f"{num_mel_bins} >= 1 and frame_shift_ms {frame_shift_ms} > 0"
            )
        self.sample_rate, self.num_mel_bins = sample_rate, num_mel_bins
        self.frame_length = int(sample_rate * frame_length_ms / 1000)
        self.frame_shift = int(sample_rate * frame_shift_ms / 1000)
        if not 0 <= low_frequency < sample_rate / 2 or self.frame_length < 2:
            raise ConfigError(
                f"filterbank: low_frequency {low_frequency} must be below Nyquist and the "
                f"frame ({frame_length_ms} ms) at least 2 samples"
            )
        self.preemphasis, self.low_frequency = preemphasis, low_frequency
        self.fft_length = 1 << (self.frame_length - 1).bit_length()  # next power of two
        self.window = _window(window, self.frame_length)  # [frame_length]
        self.mel = _mel_matrix(num_mel_bins, self.fft_length, sample_rate, low_frequency)

    def frames(self, num_samples: int) -> int:
        """Frames of a waveform of ``num_samples`` samples (0 when shorter than one window)."""
        if num_samples < self.frame_length:
            return 0
        return 1 + (num_samples - self.frame_length) // self.frame_shift

    def __call__(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Log-mel energies ``[frames, num_mel_bins]`` (float32) of mono ``samples`` in [-1, 1).

        Raises:
            ConfigError: the waveform is shorter than one frame (callers name the file).
        """
        return self.log_mel(self.power(samples))

    def power(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The power spectrum ``[frames, fft_length / 2]`` (float64) the filters read; the
        Nyquist bin, which no filter weighs, is dropped.

        Raises:
            ConfigError: the waveform is shorter than one frame (callers name the file).
        """
        wave_ = torch.as_tensor(samples, dtype=torch.float64).flatten() * 32768.0
        count = self.frames(wave_.numel())
        if count == 0:
            raise ConfigError(
                f"{wave_.numel()} samples is shorter than one {self.frame_length}-sample frame"
            )
        frames = wave_.unfold(0, self.frame_length, self.frame_shift)[:count]  # [f, w]
        frames = frames - frames.mean(dim=1, keepdim=True)  # DC offset, per frame as Kaldi
        if self.preemphasis:
            previous = torch.cat((frames[:, :1], frames[:, :-1]), dim=1)
            frames = frames - self.preemphasis * previous
        spectrum = torch.fft.rfft(frames * self.window, n=self.fft_length)  # [f, fft/2 + 1]
        power = spectrum.real.square() + spectrum.imag.square()
        return power[:, : self.fft_length // 2]

    def log_mel(self, power: torch.Tensor, warp: float = 1.0) -> torch.Tensor:
        """Log-mel energies ``[frames, num_mel_bins]`` (float32) of a ``power`` spectrum; with
        ``warp`` other than 1 the frequency axis is first warped as by a vocal tract that much
        shorter (``vtlp_frequencies``) - the VTLP augmentation of Jaitly & Hinton (2013)."""
        mel = self.mel if warp == 1.0 else self.warped(warp)
        energies = power.to(mel.dtype) @ mel  # [f, mel]
        return energies.clamp(min=_LOG_FLOOR).log().float()

    def warped(self, warp: float) -> torch.Tensor:
        """The filter matrix ``[fft_length / 2, num_mel_bins]`` evaluated at each FFT bin's
        warped frequency: energy at ``f`` Hz lands in the filters of ``vtlp_frequencies(f)``."""
        return _mel_matrix(
            self.num_mel_bins, self.fft_length, self.sample_rate, self.low_frequency, warp
        )


def _window(kind: str, length: int) -> torch.Tensor:
    hann = torch.hann_window(length, periodic=False, dtype=torch.float64)
    if kind == "povey":
        return hann.pow(0.85)
    if kind == "hamming":
        return torch.hamming_window(length, periodic=False, dtype=torch.float64)
    return hann


def _mel(hz: torch.Tensor | float) -> torch.Tensor:
    return 1127.0 * torch.log1p(torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def vtlp_frequencies(hz: torch.Tensor, warp: float, sample_rate: int) -> torch.Tensor:
    """Vocal tract length perturbation's frequency warp (Jaitly & Hinton, 2013): ``hz * warp``
    up to a boundary, then the straight line that takes the boundary's image to Nyquist, so the
    warped axis still spans [0, Nyquist] and is monotonic. The boundary is 0.8 x Nyquist scaled
    by ``min(warp, 1) / warp`` (their 4,800 Hz of 8 kHz is 0.6 x Nyquist at 16 kHz; 0.8 keeps
    more of the narrow 8 kHz band linear)."""
    nyquist = sample_rate / 2
    boundary = 0.8 * nyquist * min(warp, 1.0) / warp
    image = boundary * warp  # where the boundary lands
    upper = nyquist - (nyquist - image) * (nyquist - hz) / (nyquist - boundary)
    return torch.where(hz <= boundary, hz * warp, upper)


def _mel_matrix(
    bins: int, fft_length: int, sample_rate: int, low: float, warp: float = 1.0
) -> torch.Tensor:
    """``[fft_length / 2, bins]``: triangles with edges evenly spaced in mel, evaluated at each
    FFT bin's mel value (Kaldi's construction; the Nyquist bin gets no weight, as there); with
    ``warp`` other than 1, at the mel value of each bin's VTLP-warped frequency."""
    low_mel, high_mel = _mel(low), _mel(sample_rate / 2)
    edges = low_mel + torch.arange(bins + 2, dtype=torch.float64) * (high_mel - low_mel) / (
        bins + 1
    )
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [bins, 1]
    hz = torch.arange(fft_length // 2, dtype=torch.float64) * sample_rate / fft_length
    if warp != 1.0:
        hz = vtlp_frequencies(hz, warp, sample_rate)
    mel = _mel(hz)[None, :]  # [1, fft/2]
    rising, falling = (mel - left) / (center - left), (right - mel) / (right - center)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).T.contiguous()


def normalize(features: torch.Tensor) -> torch.Tensor:
    """Per-utterance mean and variance normalisation of ``[frames, bins]``: every bin gets mean 0
    and standard deviation 1 over the utterance (bins that never change stay 0)."""
    centred = features - features.mean(dim=0, keepdim=True)
    std = centred.square().mean(dim=0, keepdim=True).sqrt()  # population std, as Kaldi's CMVN
    return centred / std.clamp(min=_STD_FLOOR)


def spec_augment(
    features: torch.Tensor,
    rng: np.random.Generator,
    freq_masks: int = 2,
    freq_width: int = 27,
    time_masks: int = 2,
    time_width: int = 40,
    max_time_share: float = 0.2,
) -> torch.Tensor:
    """SpecAugment (Park et al., 2019) without time warping: a copy of ``[frames, bins]`` with
    ``freq_masks`` bands of up to ``freq_width`` bins and ``time_masks`` spans of up to
    ``time_width`` frames (and at most ``max_time_share`` of the utterance, so a short word is
    not erased) set to 0, the mean of normalised features. Widths are drawn uniformly from
    ``rng``, so a seeded generator gives the same masks again."""
    out = features.clone()
    frames, bins = out.shape
    for _ in range(freq_masks):
        width = int(rng.integers(0, min(freq_width, bins) + 1))
        start = int(rng.integers(0, bins - width + 1))
        out[:, start : start + width] = 0.0
    longest = min(time_width, math.floor(max_time_share * frames))
    for _ in range(time_masks):
        width = int(rng.integers(0, max(longest, 0) + 1))
        start = int(rng.integers(0, frames - width + 1))
        out[start : start + width, :] = 0.0
    return out
