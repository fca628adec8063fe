"""Images: reading and normalising them, the image_classification task's bad input, the mask
vector of the patch embedding, the masked_patch target, objective and stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import invoke, write_corpus
from PIL import Image

# isort: off
import task_samples  # noqa: F401 - first: it imports every task sample (no import cycle)
from sample_image_classification import TINY_VIT, write_bars
# isort: on

import pretrainkit
from pretrainkit.data.images import load_image, read_image_tsv
from pretrainkit.data.objectives.masked_patch import patchify
from pretrainkit.errors import ConfigError, DataError


def _png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def test_images_are_resized_and_normalised_to_minus_one_one(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4), dtype=np.uint8)
    pixels[:, 2:] = 255  # left half black, right half white
    grey = _png(tmp_path / "grey.png", pixels)
    same = load_image(grey, 4, 1)
    assert same.shape == (1, 4, 4) and same.dtype == torch.float32
    assert torch.equal(same[0, :, :2], torch.full((4, 2), -1.0))
    assert torch.equal(same[0, :, 2:], torch.ones(4, 2))
    larger = load_image(grey, 8, 3)  # grey → RGB copies the channel
    assert larger.shape == (3, 8, 8)
    assert torch.equal(larger[0], larger[2])
    assert larger[0, 0, 0] == -1.0 and larger[0, 0, 7] == 1.0
    colour = _png(tmp_path / "rgb.png", np.stack([pixels, pixels * 0, pixels], -1))
    red, green, _ = load_image(colour, 4, 3)
    assert torch.equal(red, same[0]) and torch.equal(green, torch.full((4, 4), -1.0))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["label\timage", "a\tgood.png", "b\tbad.png"], "train.tsv:3: image "),
        (["label\timage", "a\tgood.png", "b\tmissing.png"], "train.tsv:3: image "),
        (["image", "good.png"], "train.tsv:1: the header ['image'] lacks the 'label' column"),
        (["label\timage", "a"], "train.tsv:2: expected 2 tab-separated fields"),
        (["label\tpicture", "a\tgood.png"], "train.tsv:1: unknown column 'picture'"),
    ],
)
def test_bad_image_files_name_the_file_and_line(tmp_path: Path, rows, message) -> None:
    _png(tmp_path / "good.png", np.zeros((8, 8)))
    (tmp_path / "bad.png").write_text("not an image\n")
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as error:
        read_image_tsv(tmp_path / "train.tsv")
    assert message in str(error.value)
    if "bad.png" in rows[-1]:
        assert "not an image" in str(error.value)
    if "missing.png" in rows[-1]:
        assert "no such file" in str(error.value)


def test_cli_reports_a_bad_image_without_a_traceback(tmp_path: Path, capsys) -> None:
    folder = pretrainkit.build_model("vit-base", TINY_VIT).save(tmp_path / "vit")
    write_bars(tmp_path / "train.tsv", 8, 0)
    (tmp_path / "train_images" / "3.png").write_bytes(b"\x89PNG broken")
    code, _, err = invoke(
        capsys, "finetune", "--task", "image_classification", "--model", folder, "--train",
        tmp_path / "train.tsv", "--out", tmp_path / "run", "--steps", "1",
    )  # fmt: skip
    assert code != 0 and "Traceback" not in err
    assert f"{tmp_path / 'train.tsv'}:5: image" in err  # row 3 is line 5
    assert not (tmp_path / "run").exists()


def test_task_takes_the_image_size_from_the_model_and_refuses_a_mismatch(tmp_path: Path) -> None:
    from pretrainkit.tasks import build_task

    model = pretrainkit.build_model("vit-base", TINY_VIT)
    task = build_task("image_classification")
    task.prepare_model(model)
    assert (task.options.image_size, task.options.channels) == (8, 1)
    with pytest.raises(ConfigError, match="channels 3 differs from the model's"):
        build_task("image_classification", {"channels": 3}).prepare_model(model)
    text = pretrainkit.build_model("bert-tiny", {"hidden_size": 64, "encoder.num_heads": 2})
    with pytest.raises(ConfigError, match="needs a model with a 'patch' embedding"):
        build_task("image_classification").prepare_model(text)


def _masked_vit(**extra) -> pretrainkit.Model:
    torch.manual_seed(0)
    targets = [{"name": "masked_patch", **extra}]
    overrides = {**TINY_VIT, "embedding.mask_patches": True, "targets": targets}
    return pretrainkit.build_model("vit-base", overrides).eval()


def test_mask_vector_replaces_exactly_the_masked_patches() -> None:
    model = _masked_vit()
    with torch.no_grad():
        model.embedding.parts["patch"].mask.normal_()
    pixels = torch.randn(2, 1, 8, 8)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [0, 5]] = True
    mask[1, 15] = True
    plain = model.embedding(pixels)  # [b, 17, h]
    masked = model.embedding(pixels, patch_mask=mask)
    keep = torch.cat((torch.ones(2, 1, dtype=torch.bool), ~mask), dim=1)  # [CLS] stays
    assert torch.equal(masked[keep], plain[keep])
    position = model.embedding.parts["position"].weight  # [17, h]
    vector = model.embedding.parts["patch"].mask[0]
    torch.testing.assert_close(masked[0, 1], vector + position[1])
    torch.testing.assert_close(masked[1, 16], vector + position[16])
    unmasked = pretrainkit.build_model("vit-base", TINY_VIT)
    with pytest.raises(ConfigError, match="embedding.mask_patches: true"):
        unmasked(pixel_values=pixels, patch_mask=mask)


def test_patchify_reads_patches_in_the_order_of_the_patch_embedding() -> None:
    model = pretrainkit.build_model("vit-base", {**TINY_VIT, "hidden_size": 4 * 16})
    projection = model.embedding.parts["patch"].projection
    with torch.no_grad():  # output channel k copies pixel k of its 2x2 patch
        projection.weight.zero_()
        projection.bias.zero_()
        for k in range(4):
            projection.weight[k, 0, k // 2, k % 2] = 1.0
    pixels = torch.randn(1, 8, 8)
    patches = model.embedding.parts["patch"](pixels[None], None, None)[0, 1:, :4]  # [16, 4]
    torch.testing.assert_close(patches, torch.from_numpy(patchify(pixels.numpy(), 2)))


@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_masked_patch_loss_counts_the_masked_patches_only(loss: str) -> None:
    model = _masked_vit(loss=loss)
    pixels = torch.randn(2, 1, 8, 8)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :6] = True
    labels = torch.from_numpy(np.stack([patchify(p.numpy(), 2) for p in pixels]))  # [2, 16, 4]
    labels[~mask] = float("nan")
    out = model(pixel_values=pixels, patch_mask=mask, labels=labels)
    predicted = out.logits  # [2, 16, 4]
    error = predicted[mask] - labels[mask]
    expected = error.abs().mean() if loss == "l1" else error.pow(2).mean()
    torch.testing.assert_close(out.loss, expected)
    assert torch.isfinite(out.loss) and out.metrics["masked_patch_loss"] == out.loss


def _image_shards(tmp_path: Path) -> Path:
    from pretrainkit.data.preprocessing import preprocess
    from pretrainkit.tokenization import train_tokenizer

    write_bars(tmp_path / "images.tsv", 24, 0)
    train_tokenizer([write_corpus(tmp_path / "text.txt", 10)], "wordpiece", 120, tmp_path / "tok")
    options = {"image_size": 8, "channels": 1, "patch_size": 2, "patch_mask_ratio": 0.25}
    preprocess([tmp_path / "images.tsv"], tmp_path / "tok", "masked_patch", 17,
               tmp_path / "shards", log=lambda _: None, objective_options=options)  # fmt: skip
    return tmp_path / "shards"


def test_masked_patch_stream_stores_pixels_and_masks_a_fixed_share(tmp_path: Path) -> None:
    from pretrainkit.data import Shards, pretraining_stream
    from pretrainkit.data.images import load_image

    shards = Shards.open(_image_shards(tmp_path))
    assert shards.num_documents == 24 and shards.num_tokens == 24 * 64
    stream = pretraining_stream(shards, seed=3)
    first = [next(stream) for _ in range(30)]
    for instance in first:
        assert instance["patch_mask"].sum() == 4  # 25 % of 16 patches
        assert np.isnan(instance["labels"][~instance["patch_mask"]]).all()
        assert not np.isnan(instance["labels"][instance["patch_mask"]]).any()
    # The stored pixels are the image's (bytes: within half a grey level of the float values).
    pixel_sets = {i["pixel_values"].tobytes() for i in first}
    originals = [load_image(tmp_path / f"images_images/{r}.png", 8, 1).numpy() for r in range(24)]
    assert all(any(np.abs(o - i["pixel_values"]).max() < 1 / 255 for o in originals) for i in first)
    assert len(pixel_sets) == 24  # every image once per epoch
    # Resuming from a saved position gives the same following instances (masks included).
    again = pretraining_stream(shards, seed=3)
    for _ in range(10):
        next(again)
    state = json.loads(json.dumps(again.state_dict()))
    resumed = pretraining_stream(shards, seed=3)
    resumed.load_state_dict(state)
    for expected in first[10:20]:
        got = next(resumed)
        assert np.array_equal(got["patch_mask"], expected["patch_mask"])
        assert np.array_equal(got["pixel_values"], expected["pixel_values"])


def test_masked_patch_seq_length_must_match_the_patches(tmp_path: Path) -> None:
    from pretrainkit.data.preprocessing import preprocess

    write_bars(tmp_path / "images.tsv", 4, 0)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n")
    with pytest.raises(ConfigError, match="seq_length must be 17"):
        preprocess([tmp_path / "images.tsv"], tmp_path / "vocab.txt", "masked_patch", 32,
                   tmp_path / "shards", objective_options={"image_size": 8, "channels": 1,
                   "patch_size": 2}, log=lambda _: None)  # fmt: skip


def test_pretrained_masked_patch_model_fine_tunes(tmp_path: Path) -> None:
    """preprocess → pretrain (masked_patch) → fine-tune image_classification from the run."""
    from pretrainkit.data import BatchIterator, Shards, pretraining_stream
    from pretrainkit.data.objectives import get_objective
    from pretrainkit.training import TrainConfig
    from pretrainkit.workflows.finetune import finetune
    from pretrainkit.workflows.pretrain import pretrain

    shards = _image_shards(tmp_path)
    overrides = {**TINY_VIT, "embedding.mask_patches": True, "targets": [{"name": "masked_patch"}]}
    config = TrainConfig(steps=60, lr=3e-3, warmup=0, log_every=5, precision="fp32", progress=False)
    torch.manual_seed(config.seed)
    fresh = pretrainkit.build_model("vit-base", overrides).eval()  # pretrain's initial model
    pretrain("vit-base", shards, tmp_path / "pre", config, 8, overrides)
    # On the same 64 masked images, the pre-trained model predicts the pixels far better.
    stream = pretraining_stream(Shards.open(shards), seed=99)
    batch = BatchIterator(stream, 64, 0, get_objective("masked_patch").collate).next_batch()
    with torch.no_grad():
        before = fresh(**batch).loss
        after = pretrainkit.load(tmp_path / "pre").eval()(**batch).loss
    assert after < 0.8 * before, (after, before)
    write_bars(tmp_path / "train.tsv", 96, 1)
    write_bars(tmp_path / "dev.tsv", 32, 2)
    result = finetune("image_classification", tmp_path / "pre", tmp_path / "train.tsv",
                      tmp_path / "dev.tsv", tmp_path / "run",
                      {"steps": 40, "lr": 3e-3, "warmup": 4, "precision": "fp32",
                       "progress": False}, batch_size=16)  # fmt: skip
    assert result["last_eval"]["accuracy"] > 0.9, result["last_eval"]
    tuned = pretrainkit.load(tmp_path / "run")
    pre = pretrainkit.load(tmp_path / "pre")
    assert set(pre.targets) == {"masked_patch"} and set(tuned.targets) == {"classification"}
    # The body started from the pre-trained one: its mask vector came along (unused downstream).
    assert tuned.embedding.parts["patch"].mask is not None


def test_shift_moves_training_images_reproducibly(tmp_path: Path) -> None:
    from pretrainkit.tasks import build_task
    from pretrainkit.tasks.image_classification import shifted

    pixels = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert shifted(pixels, 1, 0)[0, :, 0].tolist() == [0, 0, 4, 8]  # down, top row repeated
    assert shifted(pixels, 0, -1)[0, 0].tolist() == [1, 2, 3, 3]  # left, last column repeated
    write_bars(tmp_path / "train.tsv", 8, 0)
    shifting = build_task("image_classification", {"image_size": 8, "channels": 1, "shift": 1})
    plain = build_task("image_classification", {"image_size": 8, "channels": 1})
    data = plain.read(tmp_path / "train.tsv")

    def draws(task) -> list[np.ndarray]:
        task.fit_labels(data)
        stream = task.stream(data, None, 5, 0, 1)
        return [next(stream)["pixel_values"] for _ in range(16)]

    first, again, unshifted = draws(shifting), draws(shifting), draws(plain)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))  # seeded
    moved = sum(not np.array_equal(a, b) for a, b in zip(first, unshifted))
    assert moved >= 8  # the same rows in the same order, most moved (8 of 9 offsets move)


def test_init_writes_a_vit_without_a_tokenizer_and_refuses_a_text_model(tmp_path, capsys) -> None:
    """A model that reads pixels has no vocabulary: ``init`` needs no --tokenizer for it, and
    still asks for one when the model embeds token ids."""
    vit = ["--model", "vit-base", "--model.encoder.num_layers", "1", "--out", tmp_path / "vit"]
    code, out, err = invoke(capsys, "init", *vit)
    assert code == 0, err
    model = pretrainkit.load(tmp_path / "vit")
    assert model.tokenizer is None and len(model.encoder.layers) == 1
    code, _, err = invoke(capsys, "init", "--model", "bert-tiny", "--out", tmp_path / "bert")
    assert code != 0 and "give --tokenizer" in err and not (tmp_path / "bert").exists()
