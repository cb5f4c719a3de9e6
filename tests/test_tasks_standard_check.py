"""`slimbench tasks check`: what a task needs, whether it is here and where it looked; no downloads."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from slimbench.suite.cli import main


import standard_tasks as fx  # noqa: E402  (tests/fixtures, on the path from conftest)


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Empty hub and datasets caches of the test's own, and any download attempt is a failure."""
    import huggingface_hub
    from huggingface_hub import constants

    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    try:
        import datasets.config

        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
        monkeypatch.setattr(datasets, "load_dataset", _forbidden)
    except ImportError:
        pass
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _forbidden)
    return tmp_path / "hf"


def _forbidden(*a, **kw):
    raise AssertionError("tasks check must not download or load anything")


def _task_file(tmp_path: Path, raw: dict) -> Path:
    raw["name"] = f"{raw['name']}-fixture-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _imagenet_file(tmp_path: Path, root: Path, checkpoint: str) -> Path:
    raw = fx.fixture_raw("imagenet-resnet50", {"root": str(root), "input_size": 32, "val_per_class": 1},
                         fx.tiny_timm_kwargs("imagenet-resnet50"), num_classes=3, checkpoint=checkpoint)
    return _task_file(tmp_path, raw)


def test_fixture_tasks_are_present(tmp_path, capsys):
    root = fx.imagenet_folder(tmp_path / "imagenet")
    weights = tmp_path / "tiny.safetensors"
    weights.write_bytes(b"not read by the check")
    vision = _imagenet_file(tmp_path, root, str(weights))
    bert = fx.tiny_bert_dir(tmp_path / "bert", 3)
    glue = _task_file(tmp_path, fx.fixture_raw("glue-mnli", {"root": str(fx.glue_files(tmp_path / "glue", "mnli"))},
                                               {"path": str(bert)}))
    assert main(["tasks", "check", "--task-file", str(vision), "--task-file", str(glue), "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert "OK        data: ImageNet folder" in out and f"looked in: {root / 'train'}" in out
    assert "3 classes; 6 test (val/) images" in out
    assert f"OK        baseline checkpoint: {weights}" in out
    assert "OK        data: GLUE mnli" in out and f"looked in: {tmp_path / 'glue' / 'mnli'}" in out
    assert f"OK        tokenizer: {bert}" in out and "MISSING" not in out
    assert "environment: HF_HOME" in out


def test_missing_folder_and_checkpoint_exit_nonzero(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("IMAGENET_ROOT", raising=False)
    path = _imagenet_file(tmp_path, tmp_path / "no-imagenet", str(tmp_path / "no-weights.safetensors"))
    assert main(["tasks", "check", "--task-file", str(path)]) == 1
    captured = capsys.readouterr()
    out = captured.out
    assert "MISSING   data: ImageNet folder" in out and str(tmp_path / "no-imagenet" / "train") in out
    assert "IMAGENET_ROOT" in out and "MISSING   baseline checkpoint" in out and "no-weights.safetensors" in out
    assert "missing data or weights for imagenet-resnet50-fixture" in captured.err


def test_a_folder_of_the_wrong_shape_is_missing(tmp_path, capsys):
    root = fx.imagenet_folder(tmp_path / "imagenet", classes=fx.WNIDS[:2])
    path = _imagenet_file(tmp_path, root, str(tmp_path / "w.safetensors"))
    assert main(["tasks", "check", "--task-file", str(path), "--json"]) == 1
    found = next(iter(json.loads(capsys.readouterr().out).values()))
    data = next(f for f in found if f["what"] == "data")
    assert data["status"] == "missing" and "2 class folders, the task expects 3" in data["detail"]


def test_shipped_glue_task_on_an_empty_cache_says_where_it_looked(no_network, capsys, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.delenv("GLUE_ROOT", raising=False)
    assert main(["tasks", "check", "glue-sst2"]) == 1
    out = capsys.readouterr().out
    assert "MISSING   data: nyu-mll/glue sst2" in out
    assert str(no_network / "datasets" / "nyu-mll___glue" / "sst2") in out
    assert str(no_network / "hub" / "datasets--nyu-mll--glue") in out and "GLUE_ROOT" in out
    assert "MISSING   tokenizer: google-bert/bert-base-uncased" in out
    assert "MISSING   model weights: google-bert/bert-base-uncased" in out
    assert "HF_HOME" in out and "HF_TOKEN" in out


def test_shipped_glue_task_found_in_the_caches(no_network, capsys, monkeypatch):
    """What `datasets` and the hub client leave behind after one online run counts as present."""
    pytest.importorskip("datasets")
    monkeypatch.delenv("GLUE_ROOT", raising=False)
    prepared = no_network / "datasets" / "nyu-mll___glue" / "sst2" / "0.0.0" / "abc123"
    prepared.mkdir(parents=True)
    (prepared / "dataset_info.json").write_text("{}")
    snap = no_network / "hub" / "models--google-bert--bert-base-uncased" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (snap / name).write_text("{}")
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("a" * 40)
    assert main(["tasks", "check", "glue-sst2"]) == 0
    out = capsys.readouterr().out
    assert f"prepared copy at {prepared.parent.parent}" in out and str(snap / "model.safetensors") in out


def test_unknown_task_is_a_usage_error(capsys):
    assert main(["tasks", "check", "imagenet-resnet5"]) == 2
    assert "Did you mean 'imagenet-resnet50'" in capsys.readouterr().err


def test_unknown_loaders_are_unchecked_or_use_their_own_requirements(monkeypatch):
    from slimbench.tasks import base
    from slimbench.tasks.base import Task, config_from_dict
    from slimbench.tasks.check import OK, UNCHECKED, Finding, check_task, missing

    def raw(loader):
        return {"name": "custom", "kind": "vision", "num_classes": 2, "train": {"steps": 1}, "finetune": {"steps": 1},
                "model": {"builder": "slimbench.tasks.synthetic:mlp"}, "data": {"loader": loader, "args": {"n": 3}}}
    found = check_task(Task(config_from_dict(raw("slimbench.tasks.base:deep_merge"))))
    assert found[0].status == UNCHECKED and not missing(found)
    monkeypatch.setattr(base.deep_merge, "requirements",
                        lambda cfg, n: [Finding("data", f"{n} shards", OK, ["/x"], "here")], raising=False)
    assert check_task(Task(config_from_dict(raw("slimbench.tasks.base:deep_merge"))))[0].name == "3 shards"
    found = check_task(Task(config_from_dict(raw("no_such_module:load"))))
    assert missing(found) and "cannot import it" in found[0].detail
