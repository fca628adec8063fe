"""WAV reading, Kaldi-style log-mel features (against transformers' numpy reference),
normalisation and SpecAugment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import task_samples  # noqa: F401 - the sample modules import it: it must load first
import torch
from helpers import require

# isort: split
from sample_speech_classification import write_wav

from pretrainkit.data.audio import (
    Filterbank,
    normalize,
    read_wav,
    resample,
    spec_augment,
    vtlp_frequencies,
)
from pretrainkit.errors import ConfigError, DataError


def _signal(rate: int, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * 300 * t) + 0.1 * noise).astype(np.float32)


@pytest.mark.parametrize("rate", [16000, 8000])
def test_filterbank_matches_the_numpy_kaldi_reference(rate: int) -> None:
    """transformers' numpy path of Speech2TextFeatureExtractor (Kaldi fbank without torchaudio):
    the log energies agree to 1e-4 (float32 rounding of values around 10-20)."""
    audio_utils = require("transformers.audio_utils")
    samples = _signal(rate)
    frame, hop = rate * 25 // 1000, rate * 10 // 1000
    fft = 1 << (frame - 1).bit_length()
    mel = audio_utils.mel_filter_bank(
        num_frequency_bins=fft // 2 + 1, num_mel_filters=80, min_frequency=20,
        max_frequency=rate // 2, sampling_rate=rate, norm=None, mel_scale="kaldi",
        triangularize_in_mel_space=True,
    )  # fmt: skip
    reference = audio_utils.spectrogram(
        samples * 32768, audio_utils.window_function(frame, "povey", periodic=False),
        frame_length=frame, hop_length=hop, fft_length=fft, power=2.0, center=False,
        dither=0.0, preemphasis=0.97, mel_filters=mel, log_mel="log",
        mel_floor=1.192092955078125e-07, remove_dc_offset=True,
    ).T  # fmt: skip
    ours = Filterbank(rate)(samples).numpy()
    assert ours.shape == reference.shape == (98, 80)
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)


def test_normalised_features_match_speech2text_feature_extractor() -> None:
    transformers = require("transformers")
    samples = _signal(16000, seed=1)
    extractor = transformers.Speech2TextFeatureExtractor()  # 80 bins, utterance CMVN
    reference = extractor(samples, sampling_rate=16000, return_tensors="np").input_features[0]
    ours = normalize(Filterbank(16000)(samples)).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)


def test_windows_and_frame_count() -> None:
    samples = _signal(8000, 0.5)
    povey, hamming = Filterbank(8000, 40)(samples), Filterbank(8000, 40, window="hamming")(samples)
    assert povey.shape == hamming.shape == (1 + (4000 - 200) // 80, 40)
    assert not torch.allclose(povey, hamming)
    assert Filterbank(8000).frames(199) == 0
    with pytest.raises(ConfigError, match="shorter than one 200-sample frame"):
        Filterbank(8000)(samples[:150])
    with pytest.raises(ConfigError, match="window must be one of povey, hamming, hann"):
        Filterbank(8000, window="blackman")


def test_vtlp_warp_is_linear_below_the_boundary_and_keeps_nyquist() -> None:
    hz = torch.linspace(0, 4000, 401, dtype=torch.float64)  # 8 kHz: Nyquist 4,000 Hz
    assert torch.equal(vtlp_frequencies(hz, 1.0, 8000), hz)
    for warp in (0.9, 1.1):
        out = vtlp_frequencies(hz, warp, 8000)
        boundary = 0.8 * 4000 * min(warp, 1.0) / warp  # 3,200 Hz / 1.1 = 2,909 Hz for 1.1
        low = hz <= boundary
        torch.testing.assert_close(out[low], hz[low] * warp)
        assert out[0] == 0 and out[-1] == pytest.approx(4000.0)
        assert bool((out.diff() > 0).all())  # monotonic: no two frequencies swap
        assert float(out.max()) <= 4000.0 + 1e-9


def test_warped_filters_move_a_tone_like_a_shorter_vocal_tract() -> None:
    """A 1 kHz tone's energy lands in the filter of 1.1 kHz at warp 1.1 (0.9 kHz at 0.9), and
    ``log_mel(power(x))`` is the plain filterbank."""
    rate, t = 8000, np.arange(8000) / 8000
    samples = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    bank = Filterbank(rate, 40)
    power = bank.power(samples)
    assert power.shape == (98, 128)
    torch.testing.assert_close(bank.log_mel(power), bank(samples), rtol=0, atol=0)
    torch.testing.assert_close(bank.warped(1.0), bank.mel)

    def peak(warp: float) -> int:
        return int(bank.log_mel(power, warp).mean(0).argmax())

    def filter_of(hz: float) -> int:  # the filter whose triangle peaks nearest ``hz``
        single = Filterbank(rate, 40).log_mel(
            Filterbank(rate, 40).power((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
        )
        return int(single.mean(0).argmax())

    assert peak(1.0) == filter_of(1000.0)
    assert peak(1.1) == filter_of(1100.0) > peak(1.0)
    assert peak(0.9) == filter_of(900.0) < peak(1.0)


def test_normalize_gives_zero_mean_unit_variance_and_leaves_flat_bins_at_zero() -> None:
    features = torch.randn(50, 6) * 3 + 7
    features[:, 2] = 4.0  # a band that never changes
    out = normalize(features)
    assert torch.allclose(out.mean(0), torch.zeros(6), atol=1e-5)
    std = out.square().mean(0).sqrt()
    assert torch.allclose(std[[0, 1, 3, 4, 5]], torch.ones(5), atol=1e-5)
    assert torch.equal(out[:, 2], torch.zeros(50))


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_read_wav_sample_widths(tmp_path: Path, width: int) -> None:
    samples = _signal(8000, 0.1)
    audio = read_wav(write_wav(tmp_path / "a.wav", samples, 8000, width))
    assert (audio.sample_rate, audio.source_rate, audio.channels) == (8000, 8000, 1)
    assert audio.samples.dtype == np.float32
    # Quantisation error of the width: 8-bit is coarse, the rest are near exact.
    np.testing.assert_allclose(audio.samples, samples, atol=1 / 100 if width == 1 else 1e-4)


def test_stereo_is_mixed_down(tmp_path: Path) -> None:
    left, right = _signal(8000, 0.1, seed=1), _signal(8000, 0.1, seed=2)
    audio = read_wav(write_wav(tmp_path / "s.wav", np.stack([left, right], 1), 8000, 2))
    assert audio.channels == 2
    np.testing.assert_allclose(audio.samples, (left + right) / 2, atol=1e-4)


def test_other_rates_are_resampled(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000
    sine = 0.5 * np.sin(2 * np.pi * 440 * t)  # a whole number of periods: FFT-exact
    audio = read_wav(write_wav(tmp_path / "r.wav", sine, 16000), sample_rate=8000)
    assert (audio.sample_rate, audio.source_rate, len(audio.samples)) == (8000, 16000, 8000)
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    np.testing.assert_allclose(audio.samples, expected, atol=1e-3)
    # Upsampling back gives the 16 kHz signal again.
    np.testing.assert_allclose(resample(audio.samples, 8000, 16000), sine, atol=2e-3)


def test_bad_files_are_data_errors_naming_them(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.wav: audio file not found"):
        read_wav(tmp_path / "missing.wav")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    with pytest.raises(DataError, match=r"notes\.wav: not a PCM WAV file"):
        read_wav(text)
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0), 8000)
    with pytest.raises(DataError, match=r"empty\.wav: the WAV file holds no samples"):
        read_wav(empty)
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(write_wav(tmp_path / "full.wav", _signal(8000, 0.1)).read_bytes()[:30])
    with pytest.raises(DataError, match=r"cut\.wav: not a PCM WAV file"):
        read_wav(truncated)
    floats = bytearray(write_wav(tmp_path / "f.wav", _signal(8000, 0.1)).read_bytes())
    floats[20:22] = (3).to_bytes(2, "little")  # format tag 3: IEEE float
    (tmp_path / "float.wav").write_bytes(bytes(floats))
    with pytest.raises(DataError, match=r"float\.wav: not a PCM WAV file"):
        read_wav(tmp_path / "float.wav")


def test_spec_augment_is_seeded_and_masks_bands_and_spans() -> None:
    features = torch.randn(100, 40) + 5  # no zeros of its own
    original = features.clone()
    first = spec_augment(features, np.random.default_rng(3), freq_width=10, time_width=30)
    again = spec_augment(features, np.random.default_rng(3), freq_width=10, time_width=30)
    other = spec_augment(features, np.random.default_rng(4), freq_width=10, time_width=30)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(features, original)  # the input is untouched
    zero_bins = (first == 0).all(0).sum().item()
    zero_frames = (first == 0).all(1).sum().item()
    assert 0 < zero_bins <= 20 and 0 < zero_frames <= 2 * 20  # a fifth of 100 frames at most
    kept = (first != 0) | (features == 0)
    assert torch.equal(first[kept], features[kept])  # nothing else changes
    # No masks: the features come back as they were.
    none = spec_augment(features, np.random.default_rng(3), freq_masks=0, time_masks=0)
    assert torch.equal(none, features)
