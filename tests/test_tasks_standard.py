"""The ImageNet and GLUE tasks through their real loaders, offline, on tiny fixtures in the real on-disk
formats (tests/fixtures/standard_tasks.py) with tiny models of the same architectures."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("datasets", reason="the GLUE loader and the ImageNet hub path need `datasets`")

from slimbench.suite.measure.accuracy import evaluate  # noqa: E402
from slimbench.tasks import get_task, list_tasks  # noqa: E402
from slimbench.tasks.base import Task, config_from_dict  # noqa: E402


import standard_tasks as fx  # noqa: E402  (tests/fixtures, on the path from conftest)
IMAGENET = ("imagenet-resnet50", "imagenet-deit-small", "imagenet-mobilenetv3")
GLUE = ("glue-sst2", "glue-mnli")


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    return fx.imagenet_folder(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def bert_dirs(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("bert")
    return {n: fx.tiny_bert_dir(root / f"bert{n}", n) for n in (2, 3)}


def _imagenet_task(name: str, folder: Path, profile: str = "quick", **data_args) -> Task:
    raw = fx.fixture_raw(name, {"root": str(folder), "input_size": 32, "val_per_class": 1, **data_args},
                         fx.tiny_timm_kwargs(name), num_classes=3)
    return Task(config_from_dict(raw, profile))


def _glue_task(name: str, folder: Path, bert: Path, profile: str = "quick", **data_args) -> Task:
    raw = fx.fixture_raw(name, {"root": str(folder), "val_size": 4, **data_args}, {"path": str(bert)})
    return Task(config_from_dict(raw, profile))


# --------------------------------------------------------------------------- the library

def test_library_is_registered_documented_and_profiled():
    assert set(IMAGENET + GLUE) <= set(list_tasks())
    for name in IMAGENET + GLUE:
        cfgs = {p: get_task(name, p).config for p in ("quick", "default", "full")}
        d = cfgs["default"]
        assert "Split:" in d.description and "test" in d.description and "seed" in d.description
        assert cfgs["quick"].finetune.steps < d.finetune.steps <= cfgs["full"].finetune.steps
        assert cfgs["quick"].eval_limit and d.eval_limit is None and d.min_accuracy
        assert d.latency_batch_sizes[0] == 1
    for name in IMAGENET:
        c = get_task(name).config
        assert c.num_classes == 1000 and c.checkpoint.startswith("timm:") and c.train.steps == 0
        assert c.data["loader"] == "slimbench.tasks.imagenet:imagenet" and c.data["args"]["val_per_class"] == 10
    sst2, mnli = get_task("glue-sst2").config, get_task("glue-mnli").config
    assert (sst2.num_classes, mnli.num_classes) == (2, 3) and not sst2.checkpoint and not mnli.checkpoint
    for c in (sst2, mnli):  # the Devlin et al. recipe; one epoch of the held-out-reduced train split
        assert (c.train.batch_size, c.train.lr, c.train.warmup, c.train.schedule) == (32, 2e-5, 0.1, "linear")
        assert c.model["kwargs"]["model_id"] == "google-bert/bert-base-uncased"
    assert sst2.train.steps == -(-(67_349 - 2_000) // 32) and mnli.train.steps == -(-(392_702 - 10_000) // 32)
    assert get_task("glue-mnli", "full").config.train.steps == 3 * mnli.train.steps


def test_list_shows_the_library(capsys):
    import json

    from slimbench.suite.cli import main

    assert main(["list", "tasks", "--json"]) == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)["tasks"]}
    assert set(IMAGENET + GLUE) <= set(listed)
    assert "50,000" in listed["imagenet-resnet50"]["description"]


def test_holdout_per_class_is_stratified_disjoint_and_seeded():
    from slimbench.tasks.imagenet import holdout_per_class

    labels = np.repeat(np.arange(5), [7, 3, 9, 4, 5])
    keep, held = holdout_per_class(labels, 2, seed=0)
    assert len(held) == 10 and np.bincount(labels[held]).tolist() == [2] * 5
    assert not set(keep) & set(held) and len(keep) + len(held) == len(labels)
    assert (holdout_per_class(labels, 2, 0)[1] == held).all()
    assert not (holdout_per_class(labels, 2, 1)[1] == held).all()
    with pytest.raises(ValueError, match="val_per_class=3.*class 1 has 3"):
        holdout_per_class(labels, 3, 0)


# --------------------------------------------------------------------------- ImageNet

@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_task_end_to_end_on_a_fixture_folder(name, imagenet_root):
    task = _imagenet_task(name, imagenet_root)
    data = task.data()
    assert data.info["source"] == "folder" and data.info["sizes"] == {"train": 9, "val": 3, "test": 6}
    assert data.info["num_classes"] == 3 and data.info["classes"][0] == fx.WNIDS[0]
    # preprocessing from the checkpoint's own timm config, resolution overridden for the tiny fixture
    from timm.models import get_pretrained_cfg

    pcfg = get_pretrained_cfg(task.config.checkpoint.split(":", 1)[1])
    assert data.info["preprocess"]["interpolation"] == pcfg.interpolation
    assert data.info["preprocess"]["crop_pct"] == pcfg.crop_pct and data.info["preprocess"]["input_size"] == [3, 32, 32]
    val_labels = [y for _, y in (data.val[i] for i in range(len(data.val)))]
    assert sorted(val_labels) == [0, 1, 2]  # one per class
    inputs, labels = next(iter(task.test_batches()))
    assert inputs["pixel_values"].shape == (6, 3, 32, 32) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    model = task.build_model().eval()
    with torch.no_grad():
        assert model(**inputs).shape == (6, 3)
    result = evaluate(model, task.test_batches(), "cpu")
    assert result["n"] == 6 and 0 <= result["accuracy"] <= 1
    train_x, _ = next(iter(task.loader("train", 4)))  # a grayscale JPEG among them: converted to RGB
    assert train_x["pixel_values"].shape == (4, 3, 32, 32)


def test_imagenet_root_from_the_environment_and_seeded_augmentation(imagenet_root, monkeypatch):
    monkeypatch.setenv("IMAGENET_ROOT", str(imagenet_root))
    task = _imagenet_task("imagenet-resnet50", imagenet_root, root=None)
    assert task.data().info["root_from"] == "$IMAGENET_ROOT"
    state = random.getstate()

    def batch(seed):
        torch.manual_seed(seed)
        return next(iter(task.loader("train", 9)))[0]["pixel_values"]
    a, b, c = batch(0), batch(0), batch(1)
    assert torch.equal(a, b) and not torch.equal(a, c)  # timm's crops follow torch's seed
    assert random.getstate() == state  # ... without moving Python's own stream
    cal = [x["pixel_values"] for x, _ in task.splits().calibration_batches(4)]
    again = [x["pixel_values"] for x, _ in task.splits().calibration_batches(4)]
    assert all(torch.equal(x, y) for x, y in zip(cal, again))


def test_imagenet_missing_or_malformed_folders_are_clear(imagenet_root, tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGENET_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match=r"nowhere/train does not exist.*IMAGENET_ROOT.*train/ and val/"):
        _imagenet_task("imagenet-resnet50", tmp_path / "nowhere").data()
    flat = tmp_path / "flat"
    (flat / "val").mkdir(parents=True)
    for wnid in fx.WNIDS:
        (flat / "train" / wnid).mkdir(parents=True)
        (flat / "train" / wnid / "x.JPEG").write_bytes((imagenet_root / "val" / wnid).iterdir().__next__().read_bytes())
        (flat / "train" / wnid / "y.JPEG").write_bytes((flat / "train" / wnid / "x.JPEG").read_bytes())
    (flat / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    with pytest.raises(ValueError, match="val must hold the same class folders.*unpacks flat"):
        _imagenet_task("imagenet-resnet50", flat).data()
    raw = fx.fixture_raw("imagenet-resnet50", {"root": str(imagenet_root)}, fx.tiny_timm_kwargs("imagenet-resnet50"))
    with pytest.raises(ValueError, match="3 class folders but num_classes=1000"):
        Task(config_from_dict(raw, "quick")).data()
    with pytest.raises(ValueError, match="source='web'; choose one of auto, folder, hub"):
        _imagenet_task("imagenet-resnet50", imagenet_root, source="web").data()


def test_imagenet_hub_source_goes_through_datasets(imagenet_root, monkeypatch):
    """The hub path on a local stand-in for ILSVRC/imagenet-1k (same columns: image, label)."""
    import datasets

    from PIL import Image

    def split(n):
        imgs = [Image.new("RGB", (40, 40), (i * 30 % 255, 0, 0)) for i in range(n)]
        return datasets.Dataset.from_dict({"image": imgs, "label": [i % 3 for i in range(n)]}).cast_column(
            "image", datasets.Image())
    fake = {"train": split(12), "validation": split(6)}
    monkeypatch.setattr(datasets, "load_dataset", lambda path, split, **kw: fake[split])
    monkeypatch.delenv("IMAGENET_ROOT", raising=False)
    task = _imagenet_task("imagenet-deit-small", imagenet_root, root=None)
    data = task.data()
    assert data.info["source"] == "hub" and data.info["path"] == "ILSVRC/imagenet-1k"
    assert data.info["sizes"] == {"train": 9, "val": 3, "test": 6}
    inputs, labels = next(iter(task.test_batches()))
    assert inputs["pixel_values"].shape == (6, 3, 32, 32) and labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_imagenet_hub_failure_names_the_remedy(monkeypatch, imagenet_root):
    import datasets

    def offline(*a, **kw):
        raise ConnectionError("offline")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.delenv("IMAGENET_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match=r"IMAGENET_ROOT.*ILSVRC/imagenet-1k.*HF_TOKEN"):
        _imagenet_task("imagenet-resnet50", imagenet_root, root=None).data()


# --------------------------------------------------------------------------- GLUE

@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("name", GLUE)
def test_glue_task_end_to_end_on_local_files(name, fmt, tmp_path, bert_dirs):
    config = name.split("-")[1]
    root = fx.glue_files(tmp_path / "glue", config, fmt)
    n_classes = 2 if config == "sst2" else 3
    rows = fx.SST2 if config == "sst2" else fx.MNLI
    task = _glue_task(name, root, bert_dirs[n_classes])
    data = task.data()
    assert data.info["source"] == "local" and data.info["format"] == fmt and data.info["glue_config"] == config
    assert data.info["sizes"] == {"train": 3 * len(rows) - 4, "val": 4, "test": len(rows)}
    assert data.info["labels"] == fx.GLUE_LABELS[config] and data.info["fingerprint"]
    inputs, labels = next(iter(task.test_batches()))
    assert labels.tolist() == [r[-1] for r in rows]
    if config == "mnli":  # sentence pairs: both segments reach the model
        assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}
        assert inputs["token_type_ids"].max() == 1
        first = data.test[0][0]
        assert first == rows[0][:2]
    else:
        assert set(inputs) == {"input_ids", "attention_mask"}
    model = task.build_model().eval()
    with torch.no_grad():
        assert model(**inputs).shape == (len(rows), n_classes)
    result = evaluate(model, task.test_batches(), "cpu")
    assert result["n"] == len(rows)
    # the validation split is held out of train, seeded
    val = {data.val[i][0] for i in range(len(data.val))}
    train = {data.train[i][0] for i in range(len(data.train))}
    assert not val & train
    assert {_glue_task(name, root, bert_dirs[n_classes]).data().val[i][0] for i in range(4)} == val


def test_glue_from_the_environment_and_the_hub_path(tmp_path, bert_dirs, monkeypatch):
    import datasets

    root = fx.glue_files(tmp_path / "glue", "mnli")
    monkeypatch.setenv("GLUE_ROOT", str(root))
    task = _glue_task("glue-mnli", root, bert_dirs[3], root=None)
    assert task.data().info["root_from"] == "$GLUE_ROOT"
    # the hub path: nyu-mll/glue, config mnli, test = validation_matched (served from the local files)
    monkeypatch.delenv("GLUE_ROOT")
    real = datasets.load_dataset
    calls = []

    def hub(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        return real("parquet", data_files={s: str(root / "mnli" / f"{s}-00000-of-00001.parquet")
                                           for s in ("train", "validation_matched")}, split=split)
    monkeypatch.setattr(datasets, "load_dataset", hub)
    data = _glue_task("glue-mnli", root, bert_dirs[3], root=None).data()
    assert data.info["source"] == "hub" and {c[:2] for c in calls} == {("nyu-mll/glue", "mnli")}
    assert {c[2] for c in calls} == {"train", "validation_matched"} and data.info["sizes"]["test"] == len(fx.MNLI)


def test_glue_refuses_missing_files_and_another_label_order(tmp_path, bert_dirs):
    import datasets

    with pytest.raises(FileNotFoundError, match=r"no train files for GLUE sst2 in .*sst2.*train-\*\.parquet"):
        _glue_task("glue-sst2", tmp_path / "empty", bert_dirs[2]).data()
    root = tmp_path / "swapped"
    (root / "sst2").mkdir(parents=True)
    for split in ("train", "validation"):
        ds = datasets.Dataset.from_dict({"sentence": ["good", "bad"] * 4, "label": [1, 0] * 4})
        ds.cast_column("label", datasets.ClassLabel(names=["positive", "negative"])).to_parquet(
            str(root / "sst2" / f"{split}-00000-of-00001.parquet"))
    with pytest.raises(ValueError, match=r"labels are \['positive', 'negative'\], GLUE's order is"):
        _glue_task("glue-sst2", root, bert_dirs[2], val_size=2).data()
    with pytest.raises(ValueError, match="GLUE config 'cola' is not supported; choose one of sst2, mnli"):
        _glue_task("glue-sst2", root, bert_dirs[2], config="cola").data()
