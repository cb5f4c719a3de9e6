"""The harness end to end (baseline row, one method of each family, the leaderboard) on every ImageNet
and GLUE task, on tiny fixtures: published-checkpoint baselines (ImageNet) and baselines the suite
fine-tunes (GLUE)."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from slimbench.suite.cli import main
from slimbench.suite.tracking import Tracker

pytest.importorskip("datasets", reason="the GLUE loader needs `datasets`")


import standard_tasks as fx  # noqa: E402  (tests/fixtures, on the path from conftest)


# One method of each family per task; a family that does not apply declines (UNSUPPORTED), never FAILED.
FAMILIES = {"vision-conv": ["quant.minmax", "prune.magnitude", "lowrank.tucker", "distill.kd", "nas.random"],
            "vision-vit": ["quant.minmax", "prune.magnitude", "lowrank.svd", "distill.kd", "nas.random"],
            "text": ["quant.w8a8", "prune.magnitude", "lowrank.svd", "distill.kd", "nas.random"]}
TASKS = {"imagenet-resnet50": "vision-conv", "imagenet-mobilenetv3": "vision-conv",
         "imagenet-deit-small": "vision-vit", "glue-sst2": "text", "glue-mnli": "text"}
MUST_RUN = {"quant", "prune", "distill"}  # these apply to every one of these models


def _run(tmp_path: Path, raw: dict, methods: list[str]) -> list[dict]:
    """`slimbench run --task-file` on the fixture task (its quick profile), then its MLflow records."""
    raw["name"] = f"{raw['name']}-e2e-{uuid.uuid4().hex[:8]}"
    raw["latency_batch_sizes"] = [1, 2]
    raw["profiles"]["quick"]["min_accuracy"] = None  # a random tiny model on 6 images
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(raw))
    code = main(["run", "--task-file", str(task_file), "--tasks", raw["name"], "--profile", "quick",
                 "--results-dir", str(tmp_path / "results"), "--no-progress", "--seed", "0",
                 *[x for m in methods for x in ("--method", m)]])
    assert code == 0
    assert (tmp_path / "results" / "leaderboard" / "index.html").exists()
    tracker = Tracker(None, "slimbench", tmp_path / "results")
    return [tracker.run_json(r.info.run_id) for r in tracker.runs()
            if r.data.tags.get("slimbench.kind") != "candidate"]  # a search's candidates nest under its run


def _by_method(records: list[dict]) -> dict[str, dict]:
    out = {r["method"]["name"]: r for r in records}
    for rec in records:
        assert rec["status"] in ("FINISHED", "UNSUPPORTED"), (rec["method"]["name"], rec["error"])
        if rec["status"] == "FINISHED":
            assert 0 <= rec["metrics"]["accuracy"] <= 1 and rec["metrics"]["size_bytes"] > 0
        else:
            assert rec["method"]["family"] not in MUST_RUN, (rec["method"]["name"], rec["error"])
    return out


def _raw(task: str, tmp_path: Path) -> tuple[dict, int | None]:
    """The shipped task pointed at fixtures; (raw, expected baseline steps or None for a checkpoint)."""
    if task.startswith("imagenet"):
        import timm
        import torch
        from safetensors.torch import save_file

        kwargs = fx.tiny_timm_kwargs(task)
        torch.manual_seed(0)
        net = timm.create_model(kwargs["name"], num_classes=3, **fx.TINY_TIMM[kwargs["name"]])
        weights = tmp_path / "published.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
        root = fx.imagenet_folder(tmp_path / "imagenet")
        return fx.fixture_raw(task, {"root": str(root), "input_size": 32, "val_per_class": 1}, kwargs,
                              num_classes=3, checkpoint=str(weights)), None
    config = task.removeprefix("glue-")
    labels = len(fx.GLUE_LABELS[config])
    bert = fx.tiny_bert_dir(tmp_path / "bert", labels)
    root = fx.glue_files(tmp_path / "glue", config)
    raw = fx.fixture_raw(task, {"root": str(root), "val_size": 4}, {"path": str(bert)})
    raw["profiles"]["quick"]["train"]["steps"] = 8  # the quick recipe, shortened for the CPU test
    return raw, 8


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_end_to_end_with_a_method_of_each_family(task, tmp_path, monkeypatch):
    """Baseline (a published checkpoint for ImageNet, fine-tuned here for GLUE), one method of each
    family, and the leaderboard, on fixtures through the task's real loader."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw, steps = _raw(task, tmp_path)
    methods = FAMILIES[TASKS[task]]
    runs = _by_method(_run(tmp_path, raw, methods))
    assert set(runs) == {"baseline", *methods}
    assert runs["baseline"]["baseline"]["steps"] == (steps or 0)  # a checkpoint: the published weights, untrained
    if steps is None:
        assert runs["baseline"]["baseline"]["checkpoint"]["sha256"]
    assert runs[methods[0]]["metrics"]["size_bytes"] < runs["baseline"]["metrics"]["size_bytes"]


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
