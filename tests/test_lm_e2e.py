"""The language-model tasks end to end through the harness (baseline, one method of each family that
applies, the leaderboard), offline: hamlet-lm's quick profile as shipped, and wikitext2-smollm2 on
fixture text with a tiny Llama saved as an HF model directory (its published-checkpoint baseline)."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from slimbench.suite.cli import main
from slimbench.suite.tracking import Tracker

pytestmark = pytest.mark.slow

TEXT = ("= Valkyria Chronicles =\n\nThe game began development in 2010 , carrying over a large portion of "
        "the work done on the previous game . Senjo no Valkyria 3 is a tactical role playing game . ")


def _records(results: Path) -> dict[str, dict]:
    tracker = Tracker(None, "slimbench", results)
    return {(r := tracker.run_json(run.info.run_id))["method"]["name"]: r for run in tracker.runs()
            if run.data.tags.get("slimbench.kind") != "candidate"}


def _check(runs: dict[str, dict], results: Path) -> None:
    base = runs["baseline"]["metrics"]
    for name, rec in runs.items():
        assert rec["status"] in ("FINISHED", "UNSUPPORTED"), (name, rec["error"])
        if rec["status"] == "UNSUPPORTED":
            continue
        m = rec["metrics"]
        assert rec["task"]["metric"] == "perplexity" and m["perplexity"] > 1 and "accuracy" not in m, name
        assert m["eval_tokens"] > 0 and 0 <= m["token_accuracy"] <= 1 and m["size_bytes"] > 0
    page = (results / "leaderboard" / "index.html").read_text()
    assert "Perplexity" in page and "↓" in page
    assert runs["quant.gptq"]["metrics"]["size_bytes"] < base["size_bytes"]  # both tests run GPTQ


def test_hamlet_lm_quick(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    methods = ["quant.gptq", "prune.magnitude:sparsity=0.5", "lowrank.svd", "distill.kd", "nas.random",
               "distill.feature"]
    args = ["run", "--tasks", "hamlet-lm", "--profile", "quick", "--results-dir", str(results), "--no-progress",
            "--seed", "0"]
    assert main(args + [x for m in methods for x in ("--method", m)]) == 0
    out = capsys.readouterr().out
    assert "ppl " in out  # the summary shows the task's metric
    runs = _records(results)
    assert set(runs) == {"baseline", "quant.gptq", "prune.magnitude", "lowrank.svd", "distill.kd", "nas.random",
                         "distill.feature"}
    _check(runs, results)
    # a method that cannot handle a causal LM says so (UNSUPPORTED with its reason), never FAILED
    assert runs["nas.random"]["status"] == "UNSUPPORTED" and "search space" in runs["nas.random"]["error"]
    assert runs["distill.feature"]["status"] == "UNSUPPORTED" and "use distill.kd" in runs["distill.feature"]["error"]
    assert runs["baseline"]["baseline"]["steps"] == 40


def _tiny_llama(root: Path, text: str) -> tuple[Path, int]:
    """A byte-level BPE tokenizer trained on `text` and a 1-layer Llama, saved as an HF model directory."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.save_pretrained(root)
    vocab = len(fast)
    torch.manual_seed(0)
    conf = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                       tie_word_embeddings=True, rope_theta=100000.0)
    LlamaForCausalLM(conf).save_pretrained(root)
    return root, vocab


def test_wikitext2_task_on_fixtures_with_a_published_checkpoint(tmp_path, monkeypatch):
    from slimbench.tasks import raw_task

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    text = tmp_path / "wikitext"
    text.mkdir()
    for split, reps in (("train", 12), ("valid", 3), ("test", 3)):
        (text / f"wiki.{split}.raw").write_text(TEXT * reps)
    model_dir, vocab = _tiny_llama(tmp_path / "llama", TEXT * 12)
    raw = raw_task("wikitext2-smollm2")
    raw.update(name=f"wikitext2-e2e-{uuid.uuid4().hex[:8]}", num_classes=vocab, latency_batch_sizes=[1, 2],
               baseline={"checkpoint": str(model_dir)})
    raw["data"]["args"].update(source="dir", path=str(text))
    raw["model"]["kwargs"] = {"path": str(model_dir), "config_only": True}
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    methods = ["quant.w8a8", "quant.gptq", "prune.magnitude", "lowrank.svd", "distill.kd"]
    assert main(["run", "--task-file", str(task_file), "--tasks", raw["name"], "--profile", "quick",
                 *[x for m in methods for x in ("--method", m)], "--results-dir", str(results), "--no-progress",
                 "--seed", "0"]) == 0
    runs = _records(results)
    assert set(runs) == {"baseline", *methods}
    assert all(r["status"] == "FINISHED" for r in runs.values()), {n: r["error"] for n, r in runs.items()}
    _check(runs, results)
    base = runs["baseline"]
    assert base["baseline"]["steps"] == 0 and base["baseline"]["checkpoint"]["sha256"]  # the published weights
    # the checkpoint's own perplexity: the tiny untrained model predicts close to uniformly over the vocabulary
    assert base["metrics"]["perplexity"] == pytest.approx(vocab, rel=0.2)
