"""The ``tagging`` task: its reader and bad input, word → piece alignment and truncation, the CRF
against brute force over every tag path, entity metrics against seqeval, the command line end to
end, and the real MSRA NER files."""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import warnings
from pathlib import Path

import pytest
import torch
from helpers import QUIET, OneThread, data_dir, invoke, last_json, require, write_classification
from hypothesis import given, settings
from hypothesis import strategies as st
from samp_helpers import TINY, VOCAB
from task_samples import SAMPLES

import pretrainkit
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.targets.crf import (
    IMPOSSIBLE,
    CRFTarget,
    bio_constraints,
    log_partition,
    max_marginals,
    viterbi,
)
from pretrainkit.tasks import build_task, task_of
from pretrainkit.tasks.tagging import (
    entity_metrics,
    entity_spans,
    read_label_file,
    read_tagging_tsv,
    repair_bio,
)
from pretrainkit.tokenization import load_tokenizer
from pretrainkit.workflows.finetune import finetune

LABELS = ["O", "B-A", "I-A", "B-B", "I-B"]
write_tagging = SAMPLES["tagging"].write


@pytest.fixture(autouse=True)
def _one_thread():
    with OneThread():
        yield


def _write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# -- reader ---------------------------------------------------------------------------------------
def test_reads_words_and_tags_in_either_column_order(tmp_path: Path) -> None:
    a = read_tagging_tsv(_write(tmp_path / "a.tsv", "text_a\tlabel", "the big horse\tO B-A I-A"))
    b = read_tagging_tsv(_write(tmp_path / "b.tsv", "label\ttext_a", "O B-A I-A\tthe big horse"))
    c = read_tagging_tsv(_write(tmp_path / "c.tsv", "the big horse\tO B-A I-A"), columns="text_a,label")  # fmt: skip
    for data in (a, b, c):
        assert data.words == [["the", "big", "horse"]] and data.tags == [["O", "B-A", "I-A"]]
    assert (a.first_line, c.first_line) == (2, 1)
    # A file to predict on needs no label column; a word may be a non-ASCII space.
    d = read_tagging_tsv(_write(tmp_path / "d.tsv", "text_a", "海\u3000门"), require_labels=False)
    e = read_tagging_tsv(_write(tmp_path / "e.tsv", "text_a", "海 \u3000 门"), require_labels=False)
    assert d.tags is None and d.words == [["海\u3000门"]] and e.words == [["海", "\u3000", "门"]]


def test_label_set_from_option_then_label2id_beside_then_training_tags(tmp_path: Path) -> None:
    rows = ("text_a\tlabel", "a b c\tB-X O B-Y", "d e\tB-Y I-Y")
    train = _write(tmp_path / "train.tsv", *rows)
    task = build_task("tagging")
    task.fit_labels(task.read(train))
    assert task.labels == ["O", "B-X", "I-X", "B-Y", "I-Y"]  # I-X too, though unseen
    (tmp_path / "label2id.json").write_text(json.dumps({"O": 0, "B-Y": 1, "I-Y": 2, "B-X": 3, "I-X": 4}))  # fmt: skip
    task = build_task("tagging")
    task.fit_labels(task.read(train))
    assert task.labels == ["O", "B-Y", "I-Y", "B-X", "I-X"]  # the file's id order
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(["O", "B-Y", "I-Y", "B-X", "I-X", "B-Z", "I-Z"]))
    task = build_task("tagging", {"label_file": str(mine)})
    task.fit_labels(task.read(train))
    assert task.labels[-1] == "I-Z"
    # Files read after that are checked against the set.
    dev = _write(tmp_path / "dev.tsv", "text_a\tlabel", "a\tO", "b\tB-W")
    with pytest.raises(DataError, match=r"dev.tsv:3: tag 'B-W' is not one of the labels"):
        task.read(dev)
    # A label file that lacks a training tag names the file and the row.
    mine.write_text(json.dumps(["O", "B-Y", "I-Y"]))
    with pytest.raises(DataError, match=r"train.tsv:2: tag 'B-X' is not in the label set"):
        build_task("tagging", {"label_file": str(mine)}).fit_labels(task.read(train))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"O": 0, "B-X": 2}', "ids must be the integers 0..n-1"),
        ('["B-X", "I-X"]', "O is missing"),
        ('["O", "E-X"]', "'E-X' is not a BIO tag"),
        ("{O: 0}", "not a JSON label file"),
        ('"O"', "expected a JSON object"),
    ],
)
def test_bad_label_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "label2id.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        read_label_file(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["text_a\tlabel", "a b\tO O", "a b\tO O\textra"], r":3: expected 2 tab-separated fields"),
        (["text_a\tlabel", "a b c\tO O"], r":2: 2 tags for 3 words$"),
        (["text_a\tlabel", "a b\tO E-X"], r":2: tag 'E-X' is not a BIO tag"),
        (["text_a\tlabel", "a b\tO B-"], r":2: tag 'B-' is not a BIO tag"),
        (["text_a\tlabel", "  \tO"], r":2: text_a is empty"),
        (["text_a\tlabels", "a\tO"], r":1: header: unknown column 'labels' \(did you mean 'label'"),
        (["text_a\ttext_b\tlabel", "a\tb\tO"], r":1: header: text_b is a sentence-pair column"),
        (["text_a", "a"], r":1: header: the label column is missing"),
        (["text_a\tlabel"], r":2: the file has a header but no rows"),
        ([], r"file is empty"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = _write(tmp_path / "bad.tsv", *lines)
    with pytest.raises(DataError, match=message) as error:
        read_tagging_tsv(path)
    assert str(path) in str(error.value)


def test_a_classification_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "sst.tsv"
    write_classification(path, 4, seed=0)  # label<TAB>text_a: one label per sentence
    with pytest.raises(
        DataError, match=r"sst.tsv:2: 1 tags for \d+ words; .*--task classification"
    ):
        read_tagging_tsv(path)


def test_i_tags_that_begin_an_entity_become_b_and_are_counted(tmp_path: Path, caplog) -> None:
    path = _write(
        tmp_path / "t.tsv", "text_a\tlabel", "a b c\tO B-X I-X", "a b c\tI-X O I-Y", "a b\tB-X I-Y"
    )
    with caplog.at_level(logging.WARNING, logger="pretrainkit.tasks.tagging"):
        data = read_tagging_tsv(path)
    assert data.tags == [["O", "B-X", "I-X"], ["B-X", "O", "B-Y"], ["B-X", "B-Y"]]
    assert data.repaired == 3
    assert "3 I- tags began an entity (first on line 3)" in caplog.text
    assert repair_bio(["I-X", "I-X", "I-Y", "O"]) == (["B-X", "I-X", "B-Y", "O"], 2)


# -- alignment and truncation -------------------------------------------------------------------
@pytest.fixture
def pieces_tokenizer(tmp_path: Path):
    words = ["the", "horse", "##s", "run", "##ning", "."]
    (tmp_path / "vocab.txt").write_text("\n".join([*VOCAB[:5], *words]) + "\n")
    return load_tokenizer(tmp_path / "vocab.txt")


def test_first_piece_carries_the_tag_and_cut_words_are_counted(
    tmp_path: Path, pieces_tokenizer, caplog
) -> None:
    tok = pieces_tokenizer
    path = _write(tmp_path / "t.tsv", "text_a\tlabel", "the horses running \u3000 .\tO B-A I-A O O")
    task = build_task("tagging", {"seq_length": 16})
    data = task.read(path)
    task.fit_labels(data)
    instance = next(task.stream(data, tok, seed=0, rank=0, world_size=1))
    ids = instance["input_ids"].tolist()
    assert [tok.id_to_token(i) for i in ids] == [
        "[CLS]", "the", "horse", "##s", "run", "##ning", "[UNK]", ".", "[SEP]",
    ]  # fmt: skip
    O, B, I = (task.labels.index(t) for t in ("O", "B-A", "I-A"))  # noqa: E741
    assert instance["labels"].tolist() == [-100, O, B, -100, I, -100, O, O, -100]
    batch = next(task.batches(data, tok, 8))
    assert "labels" not in batch and batch["_starts"] == [[1, 2, 4, 6, 7]]
    # seq_length 5 leaves 3 pieces: "the horse ##s"; the last three words are cut.
    task = build_task("tagging", {"seq_length": 5}, labels=task.labels)
    with caplog.at_level(logging.WARNING, logger="pretrainkit.tasks.tagging"):
        instance = next(task.stream(data, tok, seed=0, rank=0, world_size=1))
    assert instance["labels"].tolist() == [-100, O, B, -100, -100]
    assert "3 words in 1 of 1 rows lie beyond seq_length 5; they are not trained on" in caplog.text
    batch = next(task.batches(data, tok, 8))
    assert batch["_starts"] == [[1, 2]]
    # Cut words are predicted O, and the prediction has one tag per word.
    scores = torch.zeros(1, 5, len(task.labels))
    scores[0, 1, I] = scores[0, 2, I] = 1.0  # "I-A I-A" on the kept words: read as B-A I-A
    outputs = task.row_outputs(scores, batch)
    assert task.prediction_lines(outputs, data)[1] == "the horses running \u3000 .\tB-A I-A O O O"
    assert task.metrics(outputs, task.gold(data))["f1"] == 0.0  # the gold span is B-A I-A ... I-A


# -- the CRF against brute force ------------------------------------------------------------------
def _scores(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    start, transitions, end = (
        torch.randn(*shape, generator=generator, dtype=torch.float64)
        for shape in ((5,), (5, 5), (5,))
    )
    no_start, no_step = bio_constraints(LABELS)
    return (
        start.masked_fill(no_start, IMPOSSIBLE),
        transitions.masked_fill(no_step, IMPOSSIBLE),
        end,
    )


def _paths(emissions, start, transitions, end, observed=None) -> dict[tuple[int, ...], float]:
    """Every BIO-valid tag path of one row (matching ``observed`` where it is not -100) and
    its score: the brute force the recursions must equal."""
    no_start, no_step = bio_constraints(LABELS)
    found = {}
    for path in itertools.product(range(len(LABELS)), repeat=len(emissions)):
        if no_start[path[0]] or any(no_step[a, b] for a, b in itertools.pairwise(path)):
            continue
        if observed is not None and any(o not in (-100, p) for o, p in zip(observed, path)):
            continue
        score = start[path[0]] + end[path[-1]] + sum(emissions[t, p] for t, p in enumerate(path))
        found[path] = float(score + sum(transitions[a, b] for a, b in itertools.pairwise(path)))
    return found


def _logsumexp(values) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crf_recursions_equal_brute_force(seed: int) -> None:
    start, transitions, end = _scores(seed)
    lengths = [4, 2, 1]
    emissions = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(10 + seed)).double()
    mask = torch.arange(4)[None, :] < torch.tensor(lengths)[:, None]
    z = log_partition(emissions, mask, start, transitions, end)
    best = viterbi(emissions, mask, start, transitions, end)
    marginals = max_marginals(emissions, mask, start, transitions, end)
    for row, n in enumerate(lengths):
        paths = _paths(emissions[row, :n], start, transitions, end)
        assert z[row].item() == pytest.approx(_logsumexp(paths.values()), abs=1e-9)
        assert tuple(best[row]) == max(paths, key=paths.__getitem__)
        for t, tag in itertools.product(range(n), range(5)):
            through = [s for p, s in paths.items() if p[t] == tag]
            expected = max(through) if through else None
            if expected is None:  # I- first: no valid path gives it
                assert marginals[row, t, tag].item() < IMPOSSIBLE / 2
            else:
                assert marginals[row, t, tag].item() == pytest.approx(expected, abs=1e-9)
        assert marginals[row, :n].argmax(-1).tolist() == best[row]


def test_crf_loss_is_the_negative_log_likelihood_over_unobserved_tags() -> None:
    torch.manual_seed(0)
    target = CRFTarget(hidden_size=6, labels=LABELS, dropout=0.0).double()
    with torch.no_grad():
        for p in (target.start_scores, target.transitions, target.end_scores):
            p.normal_()
    hidden = torch.randn(2, 4, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    labels = torch.tensor([[-100, 1, 2, -100], [-100, 0, -100, -100]])  # -100: unobserved
    out = target(hidden, mask, labels)
    emissions = target.classifier(hidden).detach()
    start, transitions, end = (s.detach().double() for s in target.scores())
    expected = 0.0
    for row, n in enumerate((4, 3)):
        every = _paths(emissions[row, :n], start, transitions, end)
        gold = _paths(emissions[row, :n], start, transitions, end, labels[row, :n].tolist())
        expected += _logsumexp(every.values()) - _logsumexp(gold.values())
    assert out.loss.item() == pytest.approx(expected / 3, rel=1e-5)  # 3 observed tags
    out.loss.backward()
    for name, parameter in target.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name
    # A forbidden transition has no gradient: it stays impossible whatever the training.
    assert (target.transitions.grad[target.forbidden_transitions] == 0).all()
    assert target(hidden, mask, None).loss is None


def _valid(tags: list[str]) -> bool:
    return repair_bio(tags)[1] == 0


@settings(max_examples=60, deadline=None, database=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=5, max_size=40),
    st.integers(0, 2**31 - 1),
)
def test_crf_never_decodes_an_invalid_bio_sequence(values: list[float], seed: int) -> None:
    """Whatever the scores (ties and large values included), the Viterbi path is valid BIO,
    and so is what the task writes from the max-marginals."""
    length = len(values) // 5
    emissions = torch.tensor(values[: length * 5], dtype=torch.float32).reshape(1, length, 5)
    generator = torch.Generator().manual_seed(seed)
    target = CRFTarget(hidden_size=1, labels=LABELS)
    with torch.no_grad():
        target.transitions.copy_(torch.randn(5, 5, generator=generator) * 100)
        target.start_scores.copy_(torch.randn(5, generator=generator) * 100)
    start, transitions, end = (s.detach() for s in target.scores())
    path = viterbi(emissions, None, start, transitions, end)[0]
    assert _valid([LABELS[i] for i in path])
    task = build_task("tagging", {"crf": True}, labels=LABELS)
    marginals = max_marginals(emissions, None, start, transitions, end)
    assert _valid(task.decode(marginals[0].double().numpy(), length))


# -- metrics against seqeval ----------------------------------------------------------------------
def _random_rows(rng: random.Random, rows: int) -> list[list[str]]:
    return [[rng.choice(LABELS) for _ in range(rng.randint(0, 9))] for _ in range(rows)]


@pytest.mark.parametrize("seed", range(20))
def test_entity_metrics_match_seqeval(seed: int) -> None:
    require("seqeval", "the reference for entity-level metrics")
    from seqeval import metrics as sq
    from seqeval.metrics.sequence_labeling import get_entities
    from seqeval.scheme import IOB2

    rng = random.Random(seed)
    gold, predicted = _random_rows(rng, 12), _random_rows(rng, 12)
    for i, row in enumerate(gold):  # the same words on both sides
        predicted[i] = (predicted[i] + ["O"] * len(row))[: len(row)]
    for row in gold + predicted:  # conlleval's reading of any sequence, I- beginnings included
        assert entity_spans(row) == {(k, s, e + 1) for k, s, e in get_entities(row)}
    for mode, (g, p) in (
        ("default", (gold, predicted)),
        # strict IOB2 reads only valid BIO the same way: compare on the repaired sequences.
        ("strict", ([repair_bio(r)[0] for r in gold], [repair_bio(r)[0] for r in predicted])),
    ):
        options = {"mode": "strict", "scheme": IOB2} if mode == "strict" else {}
        ours = entity_metrics(p, g, ["A", "B"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seqeval warns about types it cannot score
            assert ours["f1"] == pytest.approx(sq.f1_score(g, p, zero_division=0, **options))
            assert ours["precision"] == pytest.approx(
                sq.precision_score(g, p, zero_division=0, **options)
            )
            assert ours["recall"] == pytest.approx(
                sq.recall_score(g, p, zero_division=0, **options)
            )
            report = sq.classification_report(g, p, output_dict=True, zero_division=0, **options)
        for kind in ("A", "B"):
            if kind in report:  # seqeval lists only the types present in gold
                assert ours[f"f1_{kind}"] == pytest.approx(report[kind]["f1-score"]), (mode, kind)


def test_metrics_on_nothing_to_count_are_zero() -> None:
    assert entity_metrics([["O"]], [["O"]], ["A"]) == {
        "f1": 0.0, "precision": 0.0, "recall": 0.0, "f1_A": 0.0,
    }  # fmt: skip


# -- end to end -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tagging-base")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    model.tokenizer = load_tokenizer(root / "vocab.txt")
    return model.save(root / "model")


def test_cli_finetune_crf_then_evaluate_and_predict(base: Path, tmp_path: Path, capsys) -> None:
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    write_tagging(train, 128, 1)
    write_tagging(dev, 32, 2)
    code, out, err = invoke(
        capsys, "finetune", "--task", "tagging", "--crf", "--model", base, "--train", train,
        "--dev", dev, "--out", tmp_path / "run", "--steps", 40, "--lr", 3e-3, "--batch-size", 16,
        "--seq-length", 32, *QUIET,
    )  # fmt: skip
    assert code == 0, err
    folder = tmp_path / "run" / "model"
    model = pretrainkit.load(folder)
    assert "crf" in model.target_modules()
    assert task_of(model).record()["options"]["crf"] is True
    code, out, err = invoke(capsys, "evaluate", "--model", folder, "--data", dev)
    assert code == 0, err
    scored = last_json(out)
    assert scored["task"] == "tagging" and scored["rows"] == 32
    assert scored["f1"] > 0.8 and {"f1_ANI", "f1_PER"} <= set(scored)
    code, _, err = invoke(capsys, "predict", "--model", folder, "--data", dev, "--out", tmp_path / "p.tsv")  # fmt: skip
    assert code == 0, err
    written = read_tagging_tsv(tmp_path / "p.tsv", label_set=task_of(model).labels)
    gold = read_tagging_tsv(dev)
    assert written.words == gold.words and written.repaired == 0
    assert entity_metrics(written.tags or [], gold.tags or [])["f1"] == pytest.approx(scored["f1"])
    # --crf belongs to tagging only.
    code, _, err = invoke(
        capsys, "finetune", "--model", base, "--train", train, "--out", tmp_path / "x",
        "--steps", 1, "--crf",
    )  # fmt: skip
    assert code == 2 and "--crf does not apply to task 'classification'" in err


def train_tagger(base: Path, root: Path, seed: int, **options: object) -> tuple[dict, Path]:
    """40 steps of ``finetune --task tagging`` on 128 sample rows; (its result, the dev file)."""
    train, dev = root / "train.tsv", root / "dev.tsv"
    write_tagging(train, 128, seed)
    write_tagging(dev, 32, seed + 1)
    result = finetune(
        "tagging", base, train, dev, root / "run",
        {"steps": 40, "lr": 3e-3, "warmup": 4, "precision": "fp32", "progress": False},
        batch_size=16, task_options={"seq_length": 32, **options},
    )  # fmt: skip
    assert result["last_eval"]["f1"] > 0.8, result["last_eval"]
    return result, dev


def test_softmax_head_learns_and_predicts_cut_words_as_o(base: Path, tmp_path: Path) -> None:
    _, dev = train_tagger(base, tmp_path, 3, dropout=0.0)
    model = pretrainkit.load(tmp_path / "run" / "model")
    assert "token_classification" in model.target_modules()
    from pretrainkit.workflows.finetune import predict

    # seq_length 6 keeps four words of every row; the rest are written O.
    predict(tmp_path / "run" / "model", dev, tmp_path / "p.tsv", seq_length=6)
    rows = read_tagging_tsv(tmp_path / "p.tsv")
    assert rows.words == read_tagging_tsv(dev).words
    assert all(set(tags[4:]) <= {"O"} for tags in rows.tags or [])


def test_packed_crf_training_learns(base: Path, tmp_path: Path) -> None:
    # --pack on a tagging run (per-token labels stay one row per example; the packed CRF loss
    # equals the padded one: tests/test_packing.py).
    train_tagger(base, tmp_path, 5, crf=True, pack=True)
    assert task_of(pretrainkit.load(tmp_path / "run" / "model")).options.pack is True


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"dropout must be in \[0, 1\)"):
        build_task("tagging", {"dropout": 1.5})
    with pytest.raises(ConfigError, match="unknown key 'crf_'"):
        build_task("tagging", {"crf_": True})


# -- real data ------------------------------------------------------------------------------------
def test_msra_ner_reads_whole_and_aligns_characters() -> None:
    root = data_dir("msra_ner/train.tsv", "msra_ner/dev.tsv", "msra_ner/test.tsv",
                    "msra_ner/label2id.json", "vocab/google_zh_vocab.txt")  # fmt: skip
    task = build_task("tagging", {"seq_length": 64})
    train = task.read(root / "msra_ner" / "train.tsv")
    task.fit_labels(train)
    assert task.labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    dev, test = (task.read(root / "msra_ner" / f"{name}.tsv") for name in ("dev", "test"))
    assert (len(train), len(dev), len(test)) == (1000, 2318, 4636)
    assert train.repaired == dev.repaired == test.repaired == 0
    assert train.words[0][:4] == ["海", "钓", "比", "赛"]
    assert train.tags is not None and train.tags[0][7:9] == ["B-LOC", "I-LOC"]  # 厦门
    tokenizer = load_tokenizer(root / "vocab" / "google_zh_vocab.txt")
    few = task.subset(train, [0, 1, 2])
    stream = task.stream(few, tokenizer, seed=0, rank=0, world_size=1)
    for row in range(3):
        instance = stream.instances[row]
        words, tags = few.words[row], few.tags[row]  # type: ignore[index]
        kept = min(len(words), 62)  # one character, one piece: [CLS] + 62 + [SEP]
        labels = instance["labels"].tolist()
        assert labels[0] == -100 and labels[kept + 1] == -100
        assert [task.labels[i] for i in labels[1 : kept + 1]] == tags[:kept]
        assert tokenizer.decode(instance["input_ids"][1:4].tolist()).replace(" ", "") == "".join(
            words[:3]
        )
