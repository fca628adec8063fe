"""``pretrain --pack``: a batch's instances packed into fewer rows compute the padded batch's
losses, and the flag is refused where packed rows cannot hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    NO_DROPOUT_AT_ALL,
    QUIET,
    TINY_MODEL,
    OneThread,
    invoke,
    layout_refusal,
    layout_shards,
    read_metrics,
)

from pretrainkit.data import Shards, pretraining_stream
from pretrainkit.data.objectives import get_objective


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with OneThread():
        yield


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pack")


def _shards(root: Path, objective: str) -> Path:
    """The module's shards for ``objective`` (made once)."""
    made = root / f"shards-{objective}"
    return made if made.exists() else layout_shards(root, objective, name=made.name)


def _args(shards: Path, out: Path, *extra: object) -> list[object]:
    return [
        "pretrain", *TINY_MODEL, *NO_DROPOUT_AT_ALL, "--data", shards, "--out", out,
        "--steps", 8, "--batch-size", 8, "--lr", 1e-3, "--log-every", 1, *QUIET, *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("objective", ["bert", "albert"])
def test_packed_pretraining_follows_the_padded_run(root, tmp_path, capsys, objective):
    shards = _shards(root, objective)
    # The test packs something: the stream's first batch fits in fewer rows than instances.
    stream = pretraining_stream(Shards.open(shards), seed=0)
    first = [next(stream) for _ in range(8)]
    packed = get_objective(objective).collate_packed(first, 0)
    assert packed["input_ids"].shape[0] < 8, [len(i["input_ids"]) for i in first]

    pair = "nsp" if objective == "bert" else "sop"
    heads = ["--model.targets", f"[{{name: mlm}}, {{name: {pair}}}]"]
    padded_run, packed_run = tmp_path / "padded", tmp_path / "packed"
    assert invoke(capsys, *_args(shards, padded_run, *heads))[0] == 0
    assert invoke(capsys, *_args(shards, packed_run, *heads, "--pack"))[0] == 0
    padded, got = read_metrics(padded_run), read_metrics(packed_run)
    assert [r["step"] for r in got] == list(range(1, 9))
    for mine, theirs in zip(got, padded):
        for key in ("loss", "mlm_loss", f"{pair}_loss"):
            assert mine[key] == pytest.approx(theirs[key], abs=2e-4), (mine["step"], key)
        # Real tokens are counted, not the packed rows' width.
        assert mine["tokens_per_s"] > 0
    assert got[-1]["loss"] < got[0]["loss"] - 0.05  # it trains
    run = (packed_run / "run.json").read_text()
    assert '"pack": true' in run


def test_pack_is_refused_where_packed_rows_cannot_hold(root, tmp_path, capsys, monkeypatch):
    lm = _shards(root, "lm")
    lm_head = ["--model.targets", "[{name: lm}]"]
    code, _, err = invoke(capsys, *_args(lm, tmp_path / "lm", *lm_head, "--pack"))
    assert code != 0 and "objective 'lm' cannot be packed" in err
    assert "albert, bert, mlm" in err
    assert not (tmp_path / "lm").exists()  # refused before anything is written

    bert = _shards(root, "bert")
    lstm = [
        "pretrain", "--model", "bert-tiny", "--model.hidden_size", 64,
        "--model.encoder", "{name: lstm, num_layers: 1}", "--data", bert,
        "--out", tmp_path / "lstm", "--steps", 2, "--pack", *QUIET,
    ]  # fmt: skip
    code, _, err = invoke(capsys, *lstm)
    assert code != 0 and "--pack needs a transformer encoder" in err
    assert not (tmp_path / "lstm").exists()

    args = [*_args(bert, tmp_path / "pp", "--pack"), "--pipeline-parallel", 2]
    code, err = layout_refusal(capsys, monkeypatch, 2, [str(a) for a in args])
    assert code != 0 and "--pack with pipeline_parallel > 1" in err
    assert not (tmp_path / "pp").exists()
