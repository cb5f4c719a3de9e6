"""The harness end to end (baseline row + one method + the leaderboard) on an ImageNet task with a
published-checkpoint baseline and a GLUE task the suite fine-tunes, both on tiny fixtures."""
from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest
import yaml

from slimbench.suite.cli import main
from slimbench.suite.tracking import Tracker

pytest.importorskip("datasets", reason="the GLUE loader needs `datasets`")


def _fixtures():
    path = Path(__file__).parent / "fixtures" / "standard_tasks.py"
    spec = importlib.util.spec_from_file_location("standard_tasks_fixture", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fx = _fixtures()


def _run(tmp_path: Path, raw: dict, method: str) -> list[dict]:
    """`slimbench run --task-file` on the fixture task (its quick profile), then its MLflow records."""
    raw["name"] = f"{raw['name']}-e2e-{uuid.uuid4().hex[:8]}"
    raw["latency_batch_sizes"] = [1, 2]
    raw["profiles"]["quick"]["min_accuracy"] = None  # a random tiny model on 6 images
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(raw))
    code = main(["run", "--task-file", str(task_file), "--tasks", raw["name"], "--method", method, "--profile", "quick",
                 "--results-dir", str(tmp_path / "results"), "--no-progress", "--seed", "0"])
    assert code == 0
    assert (tmp_path / "results" / "leaderboard" / "index.html").exists()
    tracker = Tracker(None, "slimbench", tmp_path / "results")
    return [tracker.run_json(r.info.run_id) for r in tracker.runs()]


def _by_method(records: list[dict]) -> dict[str, dict]:
    out = {r["method"]["name"]: r for r in records}
    for rec in records:
        assert rec["status"] == "FINISHED", (rec["method"]["name"], rec["error"])
        assert 0 <= rec["metrics"]["accuracy"] <= 1 and rec["metrics"]["size_bytes"] > 0
    return out


def test_imagenet_task_with_a_checkpoint_baseline(tmp_path, monkeypatch):
    """DeiT (the cheapest of the three to time on the CPU), its baseline a local safetensors checkpoint."""
    import timm
    import torch
    from safetensors.torch import save_file

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    torch.manual_seed(0)
    net = timm.create_model("deit_small_patch16_224", num_classes=3, **fx.TINY_TIMM["deit_small_patch16_224"])
    weights = tmp_path / "published.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    root = fx.imagenet_folder(tmp_path / "imagenet")
    raw = fx.fixture_raw("imagenet-deit-small", {"root": str(root), "input_size": 32, "val_per_class": 1},
                         fx.tiny_timm_kwargs("imagenet-deit-small"), num_classes=3, checkpoint=str(weights))
    runs = _by_method(_run(tmp_path, raw, "quant.minmax"))
    assert set(runs) == {"baseline", "quant.minmax"}
    assert runs["baseline"]["baseline"]["steps"] == 0  # the published weights, not trained
    assert runs["quant.minmax"]["metrics"]["size_bytes"] < runs["baseline"]["metrics"]["size_bytes"]


def test_glue_task_fine_tuned_by_the_suite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    bert = fx.tiny_bert_dir(tmp_path / "bert", 3)
    root = fx.glue_files(tmp_path / "glue", "mnli")
    raw = fx.fixture_raw("glue-mnli", {"root": str(root), "val_size": 4}, {"path": str(bert)})
    raw["profiles"]["quick"]["train"]["steps"] = 8  # the quick recipe, shortened for the CPU test
    runs = _by_method(_run(tmp_path, raw, "prune.magnitude"))
    assert set(runs) == {"baseline", "prune.magnitude"}
    assert runs["baseline"]["baseline"]["steps"] == 8  # trained here (no checkpoint)


def test_a_missing_checkpoint_fails_the_task_before_its_data_is_read(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = fx.fixture_raw("imagenet-deit-small", {"root": str(tmp_path / "no-imagenet")},
                         fx.tiny_timm_kwargs("imagenet-deit-small"), num_classes=3,
                         checkpoint=str(tmp_path / "typo.safetensors"))
    raw["name"] = f"imagenet-missing-{uuid.uuid4().hex[:8]}"
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(raw))
    assert main(["run", "--task-file", str(task_file), "--tasks", raw["name"], "--method", "quant.minmax",
                 "--profile", "quick", "--results-dir", str(tmp_path / "results"), "--no-progress",
                 "--no-leaderboard"]) == 1
    records = [Tracker(None, "slimbench", tmp_path / "results").run_json(r.info.run_id)
               for r in Tracker(None, "slimbench", tmp_path / "results").runs()]
    assert {r["status"] for r in records} == {"FAILED"} and len(records) == 2
    for rec in records:
        assert "typo.safetensors" in rec["error"] and "not found" in rec["error"]
        assert "no-imagenet" not in rec["error"]  # the data was never touched
