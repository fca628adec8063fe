"""The speech tasks: transcript metrics, the TSV readers and their errors, the training stream
(SpecAugment on training instances only), collation, the model checks and decoding."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import task_samples  # noqa: F401 - the sample modules import it: it must load first
import torch
from helpers import data_dir, require

# isort: split
from sample_speech2text import write_base as write_seq2seq_base
from sample_speech2text import write_tone_words
from sample_speech_classification import RATE, speech_config, tone, write_tones, write_wav

import pretrainkit
from pretrainkit.data.audio import normalize, read_wav
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.tasks import build_task
from pretrainkit.tasks.speech2text import greedy_transcribe
from pretrainkit.tasks.speech_metrics import (
    character_error_rate,
    edit_distance,
    transcript_metrics,
    word_accuracy,
    word_error_rate,
)

OPTIONS = {"sample_rate": RATE, "num_mel_bins": 40}


# -- metrics -----------------------------------------------------------------------------------
def test_edit_distance_hand_computed() -> None:
    assert edit_distance("kitten", "sitting") == 3  # k→s, e→i, +g
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3
    assert edit_distance("flaw", "lawn") == 2  # -f, +n
    assert edit_distance(["a", "b"], ["a", "b"]) == 0


def test_wer_cer_and_word_accuracy_hand_computed() -> None:
    references = ["the cat sat on the mat", "hello world"]
    hypotheses = ["the cat sit on mat", "hello  world"]
    # sat→sit and a deleted "the": 2 edits over 6 + 2 reference words, pooled over the corpus.
    assert word_error_rate(references, hypotheses) == pytest.approx(2 / 8)
    # Characters: "sat"→"sit" 1, "the " deleted 4; runs of spaces count once: 5 / (22 + 11).
    assert character_error_rate(references, hypotheses) == pytest.approx(5 / 33)
    assert word_accuracy(references, hypotheses) == 0.5
    metrics = transcript_metrics(["one", "two"], ["one", ""])
    assert metrics == {"word_accuracy": 0.5, "wer": 0.5, "cer": pytest.approx(3 / 6)}
    assert word_error_rate(["a b"], ["a b c d"]) == 1.0  # insertions count: WER can pass 1


# -- reading -----------------------------------------------------------------------------------
def test_reader_computes_features_and_resolves_paths(tmp_path: Path, caplog) -> None:
    write_tones(tmp_path / "train.tsv", 6, 1)
    absolute = write_wav(tmp_path / "abs.wav", tone(random.Random(0), 300.0))
    noise = np.random.default_rng(0)
    write_wav(tmp_path / "st.wav", 0.1 * noise.random((2400, 2)))
    write_wav(tmp_path / "fast.wav", 0.1 * noise.random(4800), rate=16000)
    with (tmp_path / "train.tsv").open("a") as file:
        file.write(f"low\t{absolute}\nmid\tst.wav\nhigh\tfast.wav\n")
    caplog.set_level(logging.INFO)
    task = build_task("speech_classification", {**OPTIONS, "seq_length": 20})
    data = task.read(tmp_path / "train.tsv")
    assert len(data) == 9 and data.audio[6] == str(absolute)
    assert all(f.shape[1] == 40 and f.dtype == np.float32 for f in data.features)
    assert data.features[0].shape[0] == 20  # 0.3 s = 28 frames, cut to seq_length
    assert data.features[-1].shape[0] == 20  # 16 kHz resampled: 0.3 s again
    assert data.features[0].mean() == pytest.approx(0.0, abs=0.1)  # normalised (before the cut)
    assert "recordings at 16000 Hz resampled to 8000 Hz" in caplog.text
    assert "1 of 9 recordings had several channels, averaged to mono" in caplog.text
    assert "9 of 9 recordings cut to seq_length 20 frames" in caplog.text
    task.fit_labels(data)
    assert task.labels == ["high", "low", "mid"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"train\.tsv: file is empty; expected a header audio<TAB>label"),
        ("label\tpath\n", r"train\.tsv:1: column 'path' is unknown; expected"),
        ("label\tlabel\n", r"train\.tsv:1: column 'label' appears twice"),
        ("audio\n", r"train\.tsv:1: the header lacks a column"),
        ("label\taudio\n", r"train\.tsv:2: the file has a header but no rows"),
        ("label\taudio\nlow\t0.wav\nlow\n", r"train\.tsv:3: expected 2 tab-separated fields"),
        ("label\taudio\nlow\t0.wav\n\tx.wav\n", r"train\.tsv:3: the label is empty"),
        ("label\taudio\nlow\tnone.wav\n", r"train\.tsv:2: audio file .*none\.wav: audio file not found"),
        ("label\taudio\nlow\tnotes.txt\n", r"train\.tsv:2: audio file .*notes\.txt: not a PCM WAV"),
        ("label\taudio\nlow\tshort.wav\n", r"train\.tsv:2: audio short\.wav: 100 samples is shorter"),
        ("label\taudio\nlow\t0.wav\nup\t0.wav\n", r"train\.tsv:3: label 'up' is not one of"),
    ],
)  # fmt: skip
def test_bad_classification_files(tmp_path: Path, content: str, message: str) -> None:
    noise = np.random.default_rng(0)
    write_wav(tmp_path / "0.wav", 0.1 * noise.random(2400))
    write_wav(tmp_path / "short.wav", 0.1 * noise.random(100))
    (tmp_path / "notes.txt").write_text("not audio\n")
    (tmp_path / "train.tsv").write_text(content)
    task = build_task("speech_classification", OPTIONS, labels=["high", "low"])
    with pytest.raises(DataError, match=message):
        task.read(tmp_path / "train.tsv")


def test_bad_transcripts(tmp_path: Path) -> None:
    write_wav(tmp_path / "0.wav", 0.1 * np.random.default_rng(0).random(2400))
    task = build_task("speech2text", OPTIONS)
    (tmp_path / "a.tsv").write_text("audio\ttext\n0.wav\t  \n")
    with pytest.raises(DataError, match=r"a\.tsv:2: the text is empty"):
        task.read(tmp_path / "a.tsv")
    tokenizer = pretrainkit.load(write_seq2seq_base(tmp_path / "base")).tokenizer
    (tmp_path / "b.tsv").write_text("audio\ttext\n0.wav\tlow\n0.wav\tlow 42 high\n")
    data = task.read(tmp_path / "b.tsv")
    with pytest.raises(DataError, match=r"b\.tsv:3: the transcript has text outside .*'42'"):
        task.stream(data, tokenizer, 0, 0, 1)
    with pytest.raises(ConfigError, match="have a header; drop --columns"):
        task.read(tmp_path / "b.tsv", columns=("audio", "text"))


# -- streams and batches -----------------------------------------------------------------------
def test_stream_augments_training_instances_only_and_resumes(tmp_path: Path) -> None:
    write_tones(tmp_path / "train.tsv", 8, 1)
    plain = build_task("speech_classification", OPTIONS)
    augmented = build_task("speech_classification", {**OPTIONS, "spec_augment": True})
    data = plain.read(tmp_path / "train.tsv")
    plain.fit_labels(data)
    augmented.fit_labels(data)
    first = next(plain.stream(data, None, 3, 0, 1))
    stream = augmented.stream(data, None, 3, 0, 1)
    masked = [next(stream) for _ in range(4)]
    row = next(i for i, f in enumerate(data.features) if np.array_equal(f, first["input_features"]))
    assert np.array_equal(first["input_features"], data.features[row])  # no masks without it
    assert not np.array_equal(masked[0]["input_features"], data.features[row])
    assert (masked[0]["input_features"] == 0).all(0).any()  # a whole band is masked
    state = stream.state_dict()
    after = [next(stream)["input_features"] for _ in range(3)]
    again = augmented.stream(data, None, 3, 0, 1)
    again.load_state_dict(state)
    for expected in after:  # the same rows and the same masks after a resume
        assert np.array_equal(next(again)["input_features"], expected)
    # Evaluation batches are never augmented.
    batch = next(augmented.batches(data, None, 8))
    assert np.array_equal(
        batch["input_features"][0, : len(data.features[0])].numpy(), data.features[0]
    )


def test_speed_perturbation_draws_one_of_three_speeds(tmp_path: Path) -> None:
    write_tones(tmp_path / "train.tsv", 2, 1)
    task = build_task("speech_classification", {**OPTIONS, "speed_perturb": True})
    data = task.read(tmp_path / "train.tsv")
    task.fit_labels(data)
    stream = task.stream(data, None, 0, 0, 1)
    lengths = {len(next(stream)["input_features"]) for _ in range(40)}
    assert lengths == {28, 25, 31}  # 0.3 s at 1x, 1/1.1x and 1/0.9x speed
    replay = task.stream(data, None, 0, 0, 1)
    first = [next(replay)["input_features"] for _ in range(5)]
    again = task.stream(data, None, 0, 0, 1)
    assert all(np.array_equal(next(again)["input_features"], f) for f in first)


def test_vtlp_warps_each_instance_by_a_drawn_factor(tmp_path: Path) -> None:
    """Every instance of the one recording is its features at some warp factor in [0.9, 1.1]
    (found again by a search over the factors), the factors spread over the range, a replay draws
    the same ones, and evaluation batches are never warped."""
    write_tones(tmp_path / "train.tsv", 1, 2)
    task = build_task("speech_classification", {**OPTIONS, "vtlp": 0.1})
    data = task.read(tmp_path / "train.tsv")
    task.fit_labels(data)
    stream = task.stream(data, None, 0, 0, 1)
    instances = [next(stream)["input_features"] for _ in range(12)]
    bank = task.options.filterbank()
    audio = read_wav(tmp_path / "train_audio" / "0.wav", RATE).samples
    power = bank.power(audio).float()
    minimize_scalar = require("scipy.optimize").minimize_scalar
    grid = np.arange(0.88, 1.1201, 0.002)
    found = []
    for features in instances:
        assert features.shape == data.features[0].shape

        def error(warp: float, features: np.ndarray = features) -> float:
            return float(np.abs(features - normalize(bank.log_mel(power, warp)).numpy()).max())

        near = grid[int(np.argmin([error(float(w)) for w in grid]))]
        best = minimize_scalar(
            error, bounds=(near - 0.002, near + 0.002), method="bounded", options={"xatol": 1e-9}
        )
        assert best.fun < 1e-3  # exactly the features at some warp factor
        found.append(round(float(best.x), 4))
    assert all(0.9 <= w <= 1.1 for w in found) and len(set(found)) == len(found)
    assert min(found) < 0.97 and max(found) > 1.03
    again = task.stream(data, None, 0, 0, 1)
    assert all(np.array_equal(next(again)["input_features"], f) for f in instances)
    batch = next(task.batches(data, None, 8))
    assert np.array_equal(batch["input_features"][0].numpy(), data.features[0])
    for bad, message in ((-0.1, "must be in"), (0.5, "must be in"), (True, "expected a number")):
        with pytest.raises(ConfigError, match=f"vtlp.*{message}"):
            build_task("speech_classification", {**OPTIONS, "vtlp": bad})


def test_vtlp_with_speed_perturbation_keeps_the_three_speeds(tmp_path: Path) -> None:
    write_tones(tmp_path / "train.tsv", 2, 1)
    options = {**OPTIONS, "speed_perturb": True, "vtlp": 0.05, "spec_augment": True}
    task = build_task("speech_classification", options)
    data = task.read(tmp_path / "train.tsv")
    task.fit_labels(data)
    stream = task.stream(data, None, 0, 0, 1)
    lengths = {len(next(stream)["input_features"]) for _ in range(40)}
    assert lengths == {28, 25, 31}


def test_collate_pads_features_and_label_sequences() -> None:
    instances = [
        {"input_features": np.ones((5, 3), np.float32), "labels": np.array([4, 5, 3])},
        {"input_features": np.ones((2, 3), np.float32), "labels": np.array([6, 3])},
    ]
    task = build_task("speech2text", OPTIONS)
    batch = task.collate(instances, 0)
    assert batch["input_features"].shape == (2, 5, 3)
    assert batch["input_features"][1, 2:].abs().sum() == 0
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[4, 5, 3], [6, 3, -100]]


# -- models ------------------------------------------------------------------------------------
def test_tasks_check_the_model(tmp_path: Path) -> None:
    text_model = pretrainkit.build_model("bert-tiny", {"hidden_size": 64, "encoder.num_heads": 2})
    speech = pretrainkit.build_model(speech_config())
    classification = build_task("speech_classification", OPTIONS)
    with pytest.raises(ConfigError, match="embedding part 'speech'"):
        classification.prepare_model(text_model)
    with pytest.raises(ConfigError, match="num_mel_bins 80 differs .* set --num-mel-bins 40"):
        build_task("speech_classification", {"sample_rate": RATE}).prepare_model(speech)
    with pytest.raises(ConfigError, match="needs an encoder-decoder"):
        build_task("speech2text", OPTIONS).prepare_model(speech)
    seq2seq = pretrainkit.build_model(speech_config(vocab_size=60))  # 64 decoder positions
    build_task("speech2text", {**OPTIONS, "target_length": 63}).prepare_model(seq2seq)
    with pytest.raises(ConfigError, match="target_length 64 needs 65 decoder positions.* 63 or"):
        build_task("speech2text", {**OPTIONS, "target_length": 64}).prepare_model(seq2seq)


def _greedy_by_forward(model, batch: dict, max_tokens: int, eos_id: int) -> list[list[int]]:
    """The reference: the whole model's forward pass on the growing decoder input, no cache."""
    features, mask = batch["input_features"], batch["attention_mask"]
    ids = torch.full((len(features), 1), model.config.decoder.start_id, dtype=torch.long)
    with torch.no_grad():
        for _ in range(max_tokens):
            logits = model(input_features=features, attention_mask=mask, decoder_input_ids=ids)
            ids = torch.cat((ids, logits.logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    rows = [row[1:] for row in ids.tolist()]
    return [row[: row.index(eos_id)] if eos_id in row else row for row in rows]


def test_greedy_transcription_matches_the_forward_pass(tmp_path: Path) -> None:
    """The cached decoding of a padded batch gives, row by row, what the model's own forward
    pass gives, and a row ends at the end token or the token limit."""
    model = pretrainkit.load(write_seq2seq_base(tmp_path / "base")).eval()
    eos = model.tokenizer.eos_id
    with torch.no_grad():  # an untrained model never ends: make the end token likely
        model.targets["seq2seq_lm"].decoder.weight[eos] *= 0  # tied: the table's row too
    write_tone_words(tmp_path / "dev.tsv", 4, 2)
    task = build_task("speech2text", {**OPTIONS, "target_length": 6})
    data = task.read(tmp_path / "dev.tsv")
    batch = next(task.batches(data, model.tokenizer, 4))
    assert batch["attention_mask"].sum(1).unique().numel() > 1  # really padded
    decoded = greedy_transcribe(model, batch, 6, eos)
    assert decoded == _greedy_by_forward(model, batch, 6, eos)
    assert all(len(row) <= 6 and eos not in row for row in decoded)
    texts = task.batch_outputs(model, batch)
    assert texts == [model.tokenizer.decode(row, skip_special_tokens=True) for row in decoded]


def test_fsdd_recordings_read(tmp_path: Path) -> None:
    """The real 8 kHz recordings of the mirror: a few read and give a frame per 10 ms."""
    files = sorted((data_dir("fsdd/recordings") / "fsdd" / "recordings").glob("*_jackson_1.wav"))
    assert len(files) == 10
    lines = ["label\taudio", *(f"{f.name[0]}\t{f}" for f in files[:3])]
    (tmp_path / "fsdd.tsv").write_text("\n".join(lines) + "\n")
    data = build_task("speech_classification", {"sample_rate": 8000}).read(tmp_path / "fsdd.tsv")
    for features, file in zip(data.features, files):
        seconds = (len(file.read_bytes()) - 44) / 16000  # 16-bit mono at 8 kHz
        assert abs(features.shape[0] - seconds * 100) < 5 and features.shape[1] == 80
        assert torch.isfinite(torch.from_numpy(features)).all()
