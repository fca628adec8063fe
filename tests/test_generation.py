"""Generation with a KV cache: cached == uncached logits, strategies, and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import pretrainkit
from pretrainkit.cli.main import main
from pretrainkit.encoders.transformer import KVCache
from pretrainkit.errors import ConfigError
from pretrainkit.generation import generate

GPT2 = {
    "vocab_size": 200,
    "hidden_size": 64,
    "encoder.num_layers": 2,
    "encoder.num_heads": 2,
    "encoder.ffn_size": 128,
    "embedding.max_positions": 64,
    "embedding.dropout": 0.0,
}
LLAMA = {
    "vocab_size": 200,
    "hidden_size": 64,
    "embedding": {"parts": ["word"], "max_positions": 64, "layer_norm": False, "dropout": 0.0},
    "encoder": {
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 1,
        "ffn_size": 128,
        "ffn": "gated",
        "activation": "silu",
        "norm": "rmsnorm",
        "norm_position": "pre",
        "position": "rotary",
        "bias": False,
        "causal": True,
        "final_norm": True,
    },
    "targets": [{"name": "lm", "tied": False}],
}
ALIBI = {
    **LLAMA,
    "encoder": {**LLAMA["encoder"], "position": "alibi", "num_kv_heads": 2},
}


def _model(kind: str, std: float = 0.3) -> pretrainkit.Model:
    torch.manual_seed(0)
    if kind == "gpt2":
        model = pretrainkit.build_model("gpt2-small", GPT2)
    else:
        model = pretrainkit.build_model(LLAMA if kind == "llama" else ALIBI)
    # Wider weights than the N(0, 0.02) init, so that next-token distributions are peaked
    # and greedy/beam choices are not decided by float noise.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, std)
    return model.eval()


KINDS = ["gpt2", "llama", "alibi"]


def _prompt(length: int, seed: int = 1) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 200, (length,), generator=g).tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_cached_logits_match_full_forward(kind: str) -> None:
    model = _model(kind, std=0.1)
    full_ids = torch.tensor([_prompt(12)])
    with torch.no_grad():
        reference = model(full_ids).logits[0]  # [12, v]
        cache = KVCache()
        lm = model.targets["lm"]
        steps = []
        for t in range(12):  # a 4-token prefill, then one token at a time
            if t and t < 4:
                continue
            chunk = full_ids[:, :4] if t == 0 else full_ids[:, t : t + 1]
            positions = torch.arange(t if t else 0, t + chunk.shape[1] if t else 4)
            x = model.embedding(chunk, positions=positions)
            steps.append(lm(model.encoder.forward_cached(x, cache, positions), None, None).logits)
        cached = torch.cat(steps, dim=1)[0]
    assert cache.layers[0] is not None and cache.layers[0][0].shape[1] == (
        1 if kind == "llama" else 2 if kind == "alibi" else 2
    )  # kv heads are stored, not repeated
    torch.testing.assert_close(cached, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_left_padded_batch_equals_prompts_alone(kind: str) -> None:
    model = _model(kind)
    prompts = [_prompt(3, 1), _prompt(9, 2), _prompt(6, 3)]
    batched = generate(model, prompts, 8)
    alone = [generate(model, [p], 8)[0] for p in prompts]
    assert batched == alone
    assert generate(model, prompts, 8, use_cache=False) == alone


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_with_and_without_cache(kind: str) -> None:
    model = _model(kind)
    prompt = [_prompt(5)]
    cached = generate(model, prompt, 20)
    assert cached == generate(model, prompt, 20, use_cache=False)
    # 15-18 distinct tokens: a model stuck on one token would pass the comparisons too.
    assert len(cached[0]) == 20 and len(set(cached[0])) >= 10, cached
    # eos stops the row and is kept as its last token.
    eos = cached[0][6]
    stopped = generate(model, prompt, 20, eos_id=eos)[0]
    assert stopped == cached[0][: cached[0].index(eos) + 1]


def test_sampling_is_seeded_and_top_k_1_is_greedy() -> None:
    model = _model("llama")
    prompt = [_prompt(4), _prompt(7, 5)]
    a = generate(model, prompt, 16, strategy="sample", seed=3, temperature=2.0)
    b = generate(model, prompt, 16, strategy="sample", seed=3, temperature=2.0)
    c = generate(model, prompt, 16, strategy="sample", seed=4, temperature=2.0)
    assert a == b and a != c
    greedy = generate(model, prompt, 16)
    assert generate(model, prompt, 16, strategy="sample", seed=9, top_k=1) == greedy
    # A tiny nucleus keeps only the most likely token, too.
    assert generate(model, prompt, 16, strategy="sample", seed=9, top_p=1e-6) == greedy


def _total_logprob(model: pretrainkit.Model, prompt: list[int], new: list[int]) -> float:
    ids = torch.tensor([prompt + new])
    with torch.no_grad():
        logp = model(ids).logits[0].log_softmax(-1)
    return sum(float(logp[len(prompt) - 1 + i, tok]) for i, tok in enumerate(new))


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_beam_search(kind: str) -> None:
    model = _model(kind)
    prompts = [_prompt(5, 11), _prompt(3, 12)]
    greedy = generate(model, prompts, 10)
    assert generate(model, prompts, 10, strategy="beam", num_beams=1) == greedy
    beam = generate(model, prompts, 10, strategy="beam", num_beams=4)
    assert beam == generate(model, prompts, 10, strategy="beam", num_beams=4, use_cache=False)
    for prompt, g, b in zip(prompts, greedy, beam, strict=True):
        assert len(b) == 10
        assert _total_logprob(model, prompt, b) >= _total_logprob(model, prompt, g) - 1e-5
    assert any(g != b for g, b in zip(greedy, beam, strict=True))


def test_bad_models_and_options_are_clear_errors() -> None:
    model = _model("gpt2")
    with pytest.raises(ConfigError, match="temperature"):
        generate(model, [[1, 2]], 4, strategy="sample", temperature=0)
    with pytest.raises(ConfigError, match="strategy"):
        generate(model, [[1, 2]], 4, strategy="nucleus")
    with pytest.raises(ConfigError, match="max_positions"):
        generate(model, [_prompt(70)], 1)
    with pytest.raises(ConfigError, match="position table"):
        generate(model, [_prompt(60)], 10)
    bert = pretrainkit.build_model(
        "bert-tiny", {"hidden_size": 64, "encoder.num_heads": 2, "targets": [{"name": "mlm"}]}
    )
    with pytest.raises(ConfigError, match="'lm' target"):
        generate(bert, [[1, 2]], 4)
    not_causal = pretrainkit.build_model("gpt2-small", {**GPT2, "encoder.causal": False})
    with pytest.raises(ConfigError, match="causal"):
        generate(not_causal, [[1, 2]], 4)


def test_cli_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pretrainkit.tokenization import train_tokenizer

    words = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "hill", "red", "big"]
    g = torch.Generator().manual_seed(0)
    lines = [
        " ".join(words[int(i)] for i in torch.randint(0, len(words), (8,), generator=g))
        for _ in range(200)
    ]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    tok = train_tokenizer([corpus], "bpe", 300, tmp_path / "tok")
    torch.manual_seed(0)
    model = pretrainkit.build_model("gpt2-small", {**GPT2, "vocab_size": tok.vocab_size})
    with torch.no_grad():  # wide weights: the default init repeats one token forever
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    model.tokenizer = tok
    model.save(tmp_path / "model")

    # What the command must print: the API's continuation of <s> + the prompt, decoded.
    assert tok.template.single[0][0] == "<s>"  # a decoder-only prompt starts with it

    def continuation(text: str, **options: Any) -> list[int]:
        ids = [tok.bos_id, *tok.encode(text)]
        return generate(model, [ids], 6, eos_id=tok.eos_id, pad_id=tok.pad_id, **options)[0]

    def expected(text: str, **options: Any) -> str:
        return tok.decode(continuation(text, **options), skip_special_tokens=True)

    assert len(set(continuation("the cat"))) >= 3  # not one token repeated
    base = ["generate", "--model", str(tmp_path / "model"), "--max-new-tokens", "6"]
    assert main([*base, "--prompt", "the cat"]) == 0
    assert capsys.readouterr().out.splitlines() == [expected("the cat")]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat\na big dog ran\n\n")
    out = tmp_path / "out.txt"
    args = [*base, "--data", str(prompts), "--out", str(out), "--strategy", "beam"]
    assert main([*args, "--num-beams", "2"]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert lines[:2] == [
        expected(t, strategy="beam", num_beams=2) for t in ("the cat", "a big dog ran")
    ]
    capsys.readouterr()
    assert main([*base, "--data", str(prompts), "--strategy", "sample", "--seed", "1"]) == 0
    assert capsys.readouterr().out.count("\n") == 3
    assert main([*base, "--prompt", "the", "--strategy", "sample", "--top-p", "2"]) == 2
    assert "top_p must be in (0, 1], got 2" in capsys.readouterr().err
