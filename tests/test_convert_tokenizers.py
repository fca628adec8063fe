"""Tokenizers of every HF family: import gives transformers' ids, export loads with AutoTokenizer.

Tiny vocabularies are trained here (SentencePiece on a generated corpus; byte-level BPE with
`tokenizers`), laid out as each family's HF folder: the original files (a SentencePiece .model,
or vocab.json + merges.txt) and the tokenizer.json that transformers itself saves from them.
Every folder is checked three ways on the same sentences and pairs: our ids (plain and with the
family's template) equal AutoTokenizer's on the folder; our export loads with AutoTokenizer and
gives them again; our own saved tokenizer gives them again.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import pytest
import sentencepiece
import torch
from helpers import require  # noqa: E402

import pretrainkit
from pretrainkit.convert import convert_from_hf, convert_to_hf
from pretrainkit.convert.tokenizer_files import export_tokenizer, import_tokenizer
from pretrainkit.errors import CheckpointError
from pretrainkit.tokenization import load_tokenizer

tf = require("transformers")

from convert_helpers import SIZES  # noqa: E402

WORDS = (
    "the a cat dog sat on mat run walk quick brown fox big red over lazy jumps house tree "
    "Hello World café naïve 東京 and or but because we they 2024 it's"
).split()
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello World, café naïve 東京!",
    "we walk because it's 2024",
    "a cat sat",
    "zebra Xylophone qqq",  # pieces the corpus never saw
]
PAIRS = [(TEXTS[0], TEXTS[3]), (TEXTS[2], TEXTS[1])]
# Whitespace, normalisation and special tokens written in the text.
ODD = ["  two  spaces  ", "tab\there", "new\nline", "ÅNGSTRÖM ﬁ ①", "x<extra_id_0>y", "a <mask> b"]
# Read straight from a .model, SentencePiece itself tokenizes; transformers converts the model
# to its own pipeline, which differs on runs of spaces for these two (and, for LLaMA, on special
# tokens glued to text: "<s>a").
SENTENCEPIECE_DIFFERS = {"pegasus": ["  two  spaces  "], "llama": ["  two  spaces  "]}
BYTE_LEVEL = ["<s>", "<pad>", "</s>", "<unk>"]


def corpus() -> list[str]:
    rng = random.Random(0)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + rng.choice(".!?,")
        for _ in range(400)
    ]


def train_spm(path: Path, **options) -> Path:
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=model,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
        **options,
    )
    path.write_bytes(model.getvalue())
    return path


def train_byte_level(directory: Path, specials: list[str]) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    directory.mkdir()
    tok.model.save(str(directory))  # vocab.json + merges.txt


def write_config(directory: Path, **config) -> None:
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Family -> its HF folder with the original tokenizer files only."""
    root = tmp_path_factory.mktemp("sources")
    folders = {}

    def spm_folder(name: str, file: str, model: Path, **config) -> None:
        (root / name).mkdir()
        shutil.copy(model, root / name / file)
        write_config(root / name, **config)
        folders[name] = root / name

    # T5 and PEGASUS: <pad>=0 </s>=1 <unk>=2 and no <s>, as in their spiece.model.
    t5 = train_spm(root / "t5.model", model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    spm_folder("t5", "spiece.model", t5, tokenizer_class="T5Tokenizer", extra_ids=7)
    spm_folder("pegasus", "spiece.model", t5, tokenizer_class="PegasusTokenizer", offset=11)
    # XLM-R: fairseq's SentencePiece model has <unk>=0 <s>=1 </s>=2; the ids shift by one.
    xlmr = train_spm(root / "xlmr.model", model_type="unigram", unk_id=0, bos_id=1, eos_id=2)
    spm_folder(
        "xlm-roberta", "sentencepiece.bpe.model", xlmr, tokenizer_class="XLMRobertaTokenizer"
    )
    # LLaMA: BPE with byte fallback, digits split, <unk>=0 <s>=1 </s>=2.
    llama = train_spm(
        root / "llama.model",
        model_type="bpe",
        vocab_size=400,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
    )
    spm_folder(
        "llama", "tokenizer.model", llama, tokenizer_class="LlamaTokenizer", add_bos_token=True
    )
    train_byte_level(root / "gpt2", ["<|endoftext|>"])
    write_config(root / "gpt2", tokenizer_class="GPT2Tokenizer")
    train_byte_level(root / "bart", [*BYTE_LEVEL, "<mask>"])
    write_config(root / "bart", tokenizer_class="BartTokenizer")
    return {**folders, "gpt2": root / "gpt2", "bart": root / "bart"}


CLASSES = {
    "t5": "T5TokenizerFast",
    "pegasus": "PegasusTokenizerFast",
    "xlm-roberta": "XLMRobertaTokenizer",
    "llama": "LlamaTokenizerFast",
    "gpt2": "GPT2Tokenizer",
    "bart": "BartTokenizer",
}


def hf_folder(sources: dict[str, Path], family: str, form: str, tmp_path: Path) -> Path:
    """The original files ("files") or the tokenizer.json transformers saves from them."""
    if form == "files":
        return sources[family]
    tf.AutoTokenizer.from_pretrained(sources[family]).save_pretrained(tmp_path / "saved")
    for name in ("vocab.json", "merges.txt"):  # so that tokenizer.json is what is read
        (tmp_path / "saved" / name).unlink(missing_ok=True)
    return tmp_path / "saved"


def assert_same_ids(ours, reference) -> None:
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == reference(text, add_special_tokens=False)["input_ids"], text
        assert ours.build_inputs(ids)[0] == reference(text)["input_ids"], text
    for a, b in PAIRS:
        got = ours.build_inputs(ours.encode(a), ours.encode(b))[0]
        assert got == reference(a, b)["input_ids"], (a, b)


@pytest.mark.parametrize("form", ["files", "tokenizer.json"])
@pytest.mark.parametrize("family", list(CLASSES))
def test_import_export_and_save_give_transformers_ids(sources, tmp_path, family, form):
    folder = hf_folder(sources, family, form, tmp_path)
    reference = tf.AutoTokenizer.from_pretrained(folder)
    ours = import_tokenizer(folder)
    assert ours is not None
    assert_same_ids(ours, reference)
    assert ours.pad_id == reference.pad_token_id or reference.pad_token is None
    known = SENTENCEPIECE_DIFFERS.get(family, []) if form == "files" else []
    for text in ODD:
        same = ours.encode(text) == reference(text, add_special_tokens=False)["input_ids"]
        assert same == (text not in known), text

    (tmp_path / "export").mkdir()
    written = export_tokenizer(ours, tmp_path / "export", CLASSES[family])
    assert "tokenizer_config.json" in written
    exported = tf.AutoTokenizer.from_pretrained(tmp_path / "export")
    assert type(exported).__name__ == type(reference).__name__
    assert_same_ids(ours, exported)

    ours.save(tmp_path / "ours")
    assert_same_ids(load_tokenizer(tmp_path / "ours"), reference)


def test_templates_are_the_families(sources):
    """The documented shapes, spelled out: where the special tokens go."""
    shapes = {
        "t5": ("a </s>", "a </s> b </s>"),
        "pegasus": ("a </s>", "a b </s>"),
        "xlm-roberta": ("<s> a </s>", "<s> a </s> </s> b </s>"),
        "bart": ("<s> a </s>", "<s> a </s> </s> b </s>"),
        "llama": ("<s> a", "<s> a <s> b"),
        "gpt2": ("a", "a b"),
    }
    for family, (single, pair) in shapes.items():
        tok = import_tokenizer(sources[family])
        a, b = tok.encode("a"), tok.encode("b")
        assert spell(tok, tok.build_inputs(a)[0], a, b) == single, family
        assert spell(tok, tok.build_inputs(a, b)[0], a, b) == pair, family


def spell(tok, ids: list[int], a: list[int], b: list[int]) -> str:
    """``ids`` with the runs equal to ``a`` and ``b`` written as "a" and "b"."""
    words, i = [], 0
    while i < len(ids):
        for name, seg in (("a", a), ("b", b)):
            if ids[i : i + len(seg)] == seg:
                words.append(name)
                i += len(seg)
                break
        else:
            words.append(tok.id_to_token(ids[i]))
            i += 1
    return " ".join(words)


def test_layouts_and_roles(sources):
    t5 = import_tokenizer(sources["t5"])
    size = t5.piece_count
    assert (t5.pad_id, t5.eos_id, t5.unk_id) == (0, 1, 2)
    assert t5.token_to_id("<extra_id_0>") == size + 6 and t5.vocab_size == size + 7
    assert (
        t5.encode("the <extra_id_0> dog")
        == tf.AutoTokenizer.from_pretrained(sources["t5"])(
            "the <extra_id_0> dog", add_special_tokens=False
        )["input_ids"]
    )
    xlmr = import_tokenizer(sources["xlm-roberta"])
    ids = [xlmr.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")]
    assert ids == [0, 1, 2, 3, xlmr.piece_count + 1]
    pegasus = import_tokenizer(sources["pegasus"])
    assert pegasus.mask_id == 3 and pegasus.unk_id == 2 + 11  # spm's <unk> shifted by offset
    assert pegasus.decode(pegasus.encode("the cat sat")) == "the cat sat"
    gpt2 = import_tokenizer(sources["gpt2"])
    # GPT-2 declares only <|endoftext|> (unk, bos, eos); pad, cls and sep borrow it.
    assert gpt2.special_tokens["pad"] is None and gpt2.pad_id == gpt2.eos_id == gpt2.bos_id
    llama = import_tokenizer(sources["llama"])
    assert llama.pad_id == llama.eos_id == 2 and llama.mask_id is None


def test_model_with_its_tokenizer_round_trips(sources, tmp_path):
    """XLM-R through the model converter: weights and the SentencePiece tokenizer together."""
    torch.manual_seed(0)
    piece_count = import_tokenizer(sources["xlm-roberta"]).vocab_size
    config = tf.XLMRobertaConfig(**{**SIZES, "vocab_size": piece_count, "type_vocab_size": 1})
    tf.XLMRobertaForMaskedLM(config).eval().save_pretrained(tmp_path / "hf")
    for path in sources["xlm-roberta"].iterdir():
        shutil.copy(path, tmp_path / "hf")
    model = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours"))
    reference = tf.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert_same_ids(model.tokenizer, reference)
    back = convert_to_hf(tmp_path / "ours", tmp_path / "back")
    assert (back / "sentencepiece.bpe.model").read_bytes() == (
        sources["xlm-roberta"] / "sentencepiece.bpe.model"
    ).read_bytes()
    assert_same_ids(model.tokenizer, tf.AutoTokenizer.from_pretrained(back))
    hf_back = tf.AutoModelForMaskedLM.from_pretrained(back).eval()
    text = reference(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = hf_back(**text).logits
        got = model.eval()(text["input_ids"], attention_mask=text["attention_mask"]).logits
    keep = text["attention_mask"].bool()
    assert (got[keep] - expected[keep]).abs().max().item() <= 1e-5


def test_bad_tokenizer_files_are_named(sources, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(sources["t5"], broken)
    (broken / "spiece.model").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match=r"spiece.model: not a SentencePiece model"):
        import_tokenizer(broken)

    saved = hf_folder(sources, "llama", "tokenizer.json", tmp_path)
    config = json.loads((saved / "tokenizer_config.json").read_text())
    (saved / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": "<bos>"}))
    with pytest.raises(CheckpointError, match=r"special token '<bos>' \(bos\) is not in the vocab"):
        import_tokenizer(saved)
    (saved / "tokenizer.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"tokenizer.json: not a valid tokenizer.json"):
        import_tokenizer(saved)


def test_export_refuses_a_layout_the_class_cannot_express(sources, tmp_path, caplog):
    t5 = import_tokenizer(sources["t5"])
    (tmp_path / "out").mkdir()
    assert export_tokenizer(t5, tmp_path / "out", "XLMRobertaTokenizer") == []
    assert "not exported as XLMRobertaTokenizer" in caplog.text
    assert list((tmp_path / "out").iterdir()) == []


def test_llama_with_its_sentencepiece_model_converts_both_ways(sources, tmp_path):
    torch.manual_seed(0)
    size = import_tokenizer(sources["llama"]).vocab_size
    config = tf.LlamaConfig(
        vocab_size=size,
        hidden_size=48,
        num_attention_heads=3,
        num_hidden_layers=2,
        intermediate_size=96,
        max_position_embeddings=40,
    )
    tf.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    for path in sources["llama"].iterdir():
        shutil.copy(path, tmp_path / "hf")
    model = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours"))
    assert_same_ids(model.tokenizer, tf.AutoTokenizer.from_pretrained(tmp_path / "hf"))
    back = convert_to_hf(tmp_path / "ours", tmp_path / "back")
    assert json.loads((back / "config.json").read_text()).get("pad_token_id") != 2  # not </s>
    assert json.loads((back / "tokenizer_config.json").read_text())["add_bos_token"] is True
    assert_same_ids(model.tokenizer, tf.AutoTokenizer.from_pretrained(back))
