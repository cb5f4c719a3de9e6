"""Published checkpoints as baselines (`baseline: {checkpoint: ...}`), on local fixtures and a
hand-made hub cache: loaded without training, provenance recorded, a missing one fails first."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from slimbench.core.config import ConfigError
from slimbench.suite.baselines import get_baseline
from slimbench.tasks import raw_task
from slimbench.tasks.base import Task, config_from_dict
from slimbench.tasks.checkpoints import CheckpointNotFound, locate, parse_ref


import standard_tasks as fx  # noqa: E402  (tests/fixtures, on the path from conftest)


class NoTrainer:
    """A trainer that fails if called: a published baseline takes no training steps."""

    def fit(self, *a, **kw):
        raise AssertionError("a checkpoint baseline must not train")


def _vision_task(checkpoint, data_root: Path, name: str = "imagenet-resnet50") -> Task:
    raw = fx.fixture_raw(name, {"root": str(data_root), "input_size": 32, "val_per_class": 1},
                         fx.tiny_timm_kwargs(name), num_classes=3, checkpoint=checkpoint)
    return Task(config_from_dict(raw, "quick"))


def _tiny_resnet(tmp_path: Path, seed: int = 1, num_classes: int = 3) -> tuple[Path, dict]:
    """A randomly initialised tiny resnet50's weights (timm's own names) in a safetensors file."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = timm.create_model("resnet50", pretrained=False, num_classes=num_classes, layers=[1, 1, 1, 1])
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    path = tmp_path / "tiny_resnet50.safetensors"
    save_file(state, str(path))
    return path, state


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fake_hub(cache: Path, repo: str, files: dict[str, bytes], commit: str = "c0ffee" * 6 + "abcd") -> Path:
    """A hub cache entry as huggingface_hub writes it: refs/main -> snapshots/<commit>/<files>."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, blob in files.items():
        (snap / name).write_bytes(blob)
    return snap


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


# --------------------------------------------------------------------------- references and config

def test_references_parse_and_bad_ones_are_named():
    assert parse_ref("timm:resnet50.tv_in1k").target == "resnet50.tv_in1k"
    hf = parse_ref("hf:textattack/bert-base-uncased-SST-2@abc123")
    assert (hf.scheme, hf.target, hf.revision) == ("hf", "textattack/bert-base-uncased-SST-2", "abc123")
    assert parse_ref("/models/x.safetensors").scheme == "path"
    with pytest.raises(ValueError, match=r"'s3:bucket/x': unknown scheme 's3'; use timm:NAME.TAG, hf:ORG/NAME"):
        parse_ref("s3:bucket/x")
    with pytest.raises(ValueError, match="names no hf model"):
        parse_ref("hf:")


def test_baseline_section_is_checked_and_keys_follow_the_checkpoint():
    raw = raw_task("imagenet-resnet50")
    key = config_from_dict(raw).baseline_key()
    other = dict(raw, baseline={"checkpoint": "timm:resnet50.a1_in1k"})
    assert config_from_dict(other).baseline_key() != key
    with pytest.raises(ConfigError, match=r"baseline must be a mapping with the key\(s\) checkpoint"):
        config_from_dict(dict(raw, baseline={"weights": "x"}))
    with pytest.raises(ConfigError, match="baseline.checkpoint=3 must be a non-empty string"):
        config_from_dict(dict(raw, baseline={"checkpoint": 3}))
    # trained baselines keep the keys they had before checkpoints existed (no stale-cache churn)
    import hashlib as h

    fm = config_from_dict(raw_task("fashion-mnist"))
    keyed = {k: fm.raw.get(k) for k in ("model", "data", "train", "seed", "num_classes")}
    keyed["baseline_format"] = 1
    assert fm.baseline_key() == h.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading

def test_local_safetensors_checkpoint_is_the_baseline_without_training_or_data(tmp_path):
    path, state = _tiny_resnet(tmp_path)
    task = _vision_task(str(path), tmp_path / "no-data-here")  # data is never read
    model, info = get_baseline(task, NoTrainer(), tmp_path / "cache", log=lambda m: None)
    got = model.net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())
    assert info["steps"] == 0 and info["train_seconds"] == 0.0 and info["key"] == task.config.baseline_key()
    ck = info["checkpoint"]
    assert ck["ref"] == str(path) and ck["source"] == "local" and ck["sha256"] == {path.name: _sha(path)}
    assert not model.training and not (tmp_path / "cache").exists()  # nothing copied into the cache
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(pixel_values=x).shape == (2, 3)


def test_a_checkpoint_of_the_whole_wrapper_and_nested_training_files_load(tmp_path):
    _, state = _tiny_resnet(tmp_path)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.net.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    model, info = get_baseline(_vision_task(str(wrapped), tmp_path), NoTrainer(), tmp_path / "c", log=lambda m: None)
    assert torch.equal(model.net.fc.weight, state["fc.weight"]) and info["checkpoint"]["sha256"]


def test_a_checkpoint_of_another_shape_is_refused(tmp_path):
    path, _ = _tiny_resnet(tmp_path, num_classes=5)
    shapes = r"task 'imagenet-resnet50'.*2 shape mismatch.*fc.weight: checkpoint \[5, 2048\] vs model \[3, 2048\]"
    with pytest.raises(ValueError, match=shapes):
        get_baseline(_vision_task(str(path), tmp_path), NoTrainer(), tmp_path / "c", log=lambda m: None)
    from safetensors.torch import save_file

    save_file({"something.else": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="missing .* tensor.*unexpected 1"):
        get_baseline(_vision_task(str(tmp_path / "other.safetensors"), tmp_path), NoTrainer(), tmp_path / "c")


def test_missing_local_checkpoint_fails_first_and_says_how(tmp_path):
    task = _vision_task(str(tmp_path / "typo.safetensors"), tmp_path)
    with pytest.raises(CheckpointNotFound) as err:
        get_baseline(task, NoTrainer(), tmp_path / "c", log=lambda m: None)
    msg = str(err.value)
    assert "task 'imagenet-resnet50'" in msg and "typo.safetensors" in msg and "baseline.checkpoint" in msg


def test_missing_hub_checkpoint_names_the_cache_and_the_environment(tmp_path, hub_cache, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    task = _vision_task("timm:resnet50.tv_in1k", tmp_path)
    with pytest.raises(CheckpointNotFound) as err:
        get_baseline(task, NoTrainer(), tmp_path / "c", log=lambda m: None)
    msg = str(err.value)
    for needle in ("'timm:resnet50.tv_in1k'", "timm/resnet50.tv_in1k", str(hub_cache), "local path", "HF_HOME",
                   "HF_HUB_OFFLINE", "HF_TOKEN"):
        assert needle in msg, needle
    with pytest.raises(CheckpointNotFound, match=r"no pretrained weights named 'resnet50.tv_in1kk'.*did you mean"):
        locate("timm:resnet50.tv_in1kk")
    with pytest.raises(CheckpointNotFound, match="textattack/bert-base-uncased-SST-2.*not cached"):
        locate("hf:textattack/bert-base-uncased-SST-2")


def test_timm_checkpoint_from_the_hub_cache_records_its_revision(tmp_path, hub_cache):
    from safetensors.torch import save

    _, state = _tiny_resnet(tmp_path, seed=4)
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = _fake_hub(hub_cache, "timm/resnet50.tv_in1k", {"model.safetensors": save(state)}, commit)
    model, info = get_baseline(_vision_task("timm:resnet50.tv_in1k", tmp_path), NoTrainer(), tmp_path / "c",
                               log=lambda m: None)
    ck = info["checkpoint"]
    assert ck["source"] == "hub" and ck["repo"] == "timm/resnet50.tv_in1k" and ck["revision"] == commit
    assert ck["sha256"] == {"model.safetensors": _sha(snap / "model.safetensors")}
    assert torch.equal(model.net.conv1.weight, state["conv1.weight"])


def test_hf_model_directory_and_hub_repo_checkpoints(tmp_path, hub_cache):
    """A fine-tuned BERT as an HF model directory, then the same files as a cached hub repo."""
    pytest.importorskip("datasets")
    bert = fx.tiny_bert_dir(tmp_path / "finetuned", 2, seed=7)
    base = fx.tiny_bert_dir(tmp_path / "base", 2, seed=0)
    raw = fx.fixture_raw("glue-sst2", {"root": str(tmp_path / "no-data")}, {"path": str(base)},
                         checkpoint=str(bert))
    task = Task(config_from_dict(raw, "quick"))
    model, info = get_baseline(task, NoTrainer(), tmp_path / "c", log=lambda m: None)
    from transformers import BertForSequenceClassification

    ref = BertForSequenceClassification.from_pretrained(str(bert)).state_dict()
    got = model.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in ref.items())
    assert info["checkpoint"]["sha256"] == {"model.safetensors": _sha(bert / "model.safetensors")}

    files = {p.name: p.read_bytes() for p in bert.iterdir() if p.is_file()}
    _fake_hub(hub_cache, "someone/bert-tiny-sst2", files, "f" * 40)
    raw["baseline"] = {"checkpoint": "hf:someone/bert-tiny-sst2"}
    model, info = get_baseline(Task(config_from_dict(raw, "quick")), NoTrainer(), tmp_path / "c", log=lambda m: None)
    assert info["checkpoint"]["revision"] == "f" * 40 and info["checkpoint"]["repo"] == "someone/bert-tiny-sst2"
    assert torch.equal(model.model.classifier.weight, ref["classifier.weight"])


def test_a_base_model_is_not_taken_for_a_fine_tuned_classifier(tmp_path):
    from transformers import BertConfig, BertModel

    base = fx.tiny_bert_dir(tmp_path / "base", 2)
    encoder = tmp_path / "encoder"
    BertModel(BertConfig.from_pretrained(str(base))).save_pretrained(str(encoder))
    raw = fx.fixture_raw("glue-sst2", {"root": str(tmp_path)}, {"path": str(base)}, checkpoint=str(encoder))
    with pytest.raises(ValueError, match=r"lacks .* tensor\(s\).*classifier.*base model rather than one fine-tuned"):
        get_baseline(Task(config_from_dict(raw, "quick")), NoTrainer(), tmp_path / "c", log=lambda m: None)


def _hub_error(cls, msg: str):
    """A huggingface_hub HTTP error without an HTTP response (their constructor wants one)."""
    err = cls.__new__(cls)
    Exception.__init__(err, msg)
    return err


def test_downloads_map_hub_errors_to_what_is_missing(tmp_path, hub_cache, monkeypatch):
    """Online (simulated): a gated repo, a typo and a repo without safetensors each get their answer."""
    import huggingface_hub
    from huggingface_hub import errors

    tried = []

    def download(repo, filename, revision=None, **kw):
        tried.append(filename)
        if repo == "org/gated":
            raise _hub_error(errors.GatedRepoError, "403 gated")
        if repo == "org/typo":
            raise _hub_error(errors.RepositoryNotFoundError, "404")
        if filename == "model.safetensors":
            raise _hub_error(errors.RemoteEntryNotFoundError, "no such file")
        snap = hub_cache / "models--org--old" / "snapshots" / ("b" * 40)
        snap.mkdir(parents=True, exist_ok=True)
        (snap / filename).write_bytes(b"{}" if filename == "config.json" else b"weights")
        return str(snap / filename)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(CheckpointNotFound, match=r"org/gated is gated: accept its terms on the hub and set HF_TOKEN"):
        locate("hf:org/gated")
    with pytest.raises(CheckpointNotFound, match=r"no repo/revision org/typo@v2 on the hub \(a typo\?"):
        locate("hf:org/typo@v2")
    found = locate("hf:org/old")
    assert [f.name for f in found.files] == ["pytorch_model.bin"] and found.revision == "b" * 40
    assert tried[-2:] == ["model.safetensors", "pytorch_model.bin"]  # safetensors first, as transformers
    with pytest.raises(CheckpointNotFound, match="not in the local hub cache"):
        locate("hf:org/elsewhere", download=False)
