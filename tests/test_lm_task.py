"""The language-model path: token windows, perplexity as the GPTQ papers compute it, the metric's
direction through selection and losses, and the hamlet-lm task's definition."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimbench.core.config import ConfigError
from slimbench.core.metrics import get_metric
from slimbench.methods.common.losses import kd_loss, task_loss
from slimbench.suite.measure.accuracy import evaluate
from slimbench.tasks import get_task
from slimbench.tasks.base import config_from_dict
from slimbench.tasks.lm import ByteTokenizer, TokenWindows, read_texts, shift_collate, text_lm


class FixedLogits(nn.Module):
    """Returns the logits it was given for each window, looked up by the window's first token."""

    def __init__(self, table: dict[int, torch.Tensor]):
        super().__init__()
        self.table = table

    def forward(self, input_ids):
        return torch.stack([self.table[int(w[0])] for w in input_ids])


def _raw(tmp_path, **args):
    return {"name": "tiny-lm", "kind": "lm", "metric": "perplexity", "num_classes": 256,
            "model": {"builder": "slimbench.tasks.lm:causal_lm",
                      "kwargs": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                 "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 16}},
            "data": {"loader": "slimbench.tasks.lm:text_lm",
                     "args": {"source": "dir", "path": str(tmp_path), "tokenizer": "bytes", "context": 8, **args}},
            "train": {"steps": 2, "batch_size": 4, "lr": 1e-3}, "finetune": {"steps": 1, "batch_size": 4, "lr": 1e-3}}


@pytest.fixture
def text_dir(tmp_path):
    (tmp_path / "train.txt").write_text("the quick brown fox jumps over the lazy dog. " * 4)
    (tmp_path / "valid.txt").write_text("a valid sentence of text here")
    (tmp_path / "test.txt").write_text("0123456789abcdefghijklmnopq")  # 27 bytes: 3 windows of 8, 3 bytes dropped
    return tmp_path


def test_windows_are_non_overlapping_and_labels_are_the_next_tokens(text_dir):
    data = text_lm(config_from_dict(_raw(text_dir)), source="dir", path=str(text_dir), tokenizer="bytes", context=8)
    test = data.test
    assert len(test) == 3  # the trailing partial window is dropped
    windows = [test[i] for i in range(3)]
    assert bytes(torch.cat(windows).tolist()) == b"0123456789abcdefghijklmnopq"[:24]
    inputs, labels = shift_collate(windows)
    assert torch.equal(labels[:, :-1], inputs["input_ids"][:, 1:])
    assert (labels[:, -1] == -100).all()
    assert len(data.train) == (len(ByteTokenizer().encode("the quick brown fox jumps over the lazy dog. " * 4)) - 8) // 4 + 1
    with pytest.raises(IndexError):
        test[3]


def test_perplexity_matches_a_hand_computation():
    torch.manual_seed(0)
    windows = [torch.tensor([i, 3, 1, 2]) for i in range(3)]
    table = {i: torch.randn(4, 5) for i in range(3)}
    inputs, labels = shift_collate(windows)
    out = evaluate(FixedLogits(table), [(inputs, labels)], "cpu", metric="perplexity")
    nll = [F.cross_entropy(table[i][:-1], torch.tensor([3, 1, 2]), reduction="sum") for i in range(3)]
    mean = float(sum(nll)) / 9  # three predicted tokens per window
    assert out["perplexity"] == pytest.approx(math.exp(mean), rel=1e-6)
    assert out["nll"] == pytest.approx(mean, rel=1e-6) and out["tokens"] == 9 and out["n"] == 3
    # uniform logits over V tokens: perplexity V
    flat = {i: torch.zeros(4, 5) for i in range(3)}
    assert evaluate(FixedLogits(flat), [(inputs, labels)], "cpu", metric="perplexity")["perplexity"] == \
        pytest.approx(5.0)


def test_a_metric_the_suite_does_not_know_is_refused_by_name(text_dir):
    with pytest.raises(ConfigError, match="unknown metric 'bleu'; choose one of accuracy, perplexity"):
        config_from_dict({**_raw(text_dir), "metric": "bleu"})
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(nn.Identity(), [], "cpu", metric="bleu")


def test_metric_direction_and_deltas():
    ppl, acc = get_metric("perplexity"), get_metric("accuracy")
    assert ppl.score(8.0) > ppl.score(9.0) and acc.score(0.9) > acc.score(0.8)
    assert ppl.delta(11.0, 10.0) == pytest.approx(0.1) and ppl.fmt_delta(0.1) == "+10.0%"
    assert acc.delta(0.91, 0.9) == pytest.approx(0.01) and acc.fmt_delta(0.01) == "+1.00 pp"
    assert ppl.unscore(ppl.score(7.5)) == 7.5
    assert ppl.score(float("nan")) == -math.inf


def test_losses_read_per_token_logits_and_skip_unpredicted_positions():
    torch.manual_seed(1)
    student, teacher = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    labels = torch.randint(0, 6, (2, 4))
    labels[:, -1] = -100
    keep = labels.reshape(-1) != -100
    s, t, y = student.reshape(-1, 6)[keep], teacher.reshape(-1, 6)[keep], labels.reshape(-1)[keep]
    assert task_loss(student, labels) == pytest.approx(float(F.cross_entropy(s, y)))
    want = 0.5 * F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), reduction="batchmean",
                          log_target=True) * 4 + 0.5 * F.cross_entropy(s, y)
    assert kd_loss(student, teacher, labels, 2.0, 0.5) == pytest.approx(float(want), rel=1e-6)


def test_selection_scores_perplexity_higher_is_better(text_dir):
    from slimbench.suite.context import make_context
    from slimbench.tasks.base import Task

    task = Task(config_from_dict(_raw(text_dir)))
    model = task.build_model()
    ctx = make_context(task, baseline=model)
    ppl = ctx.val_metric(model)
    assert ppl > 1 and ctx.val_score(model) == pytest.approx(-ppl)
    with pytest.raises(ValueError, match="scored by perplexity, not accuracy: select with ctx.val_score"):
        ctx.val_accuracy(model)


def test_the_baseline_bound_follows_the_metric(text_dir):
    import dataclasses

    from slimbench.suite.runner import baseline_bound_missed

    cfg = dataclasses.replace(config_from_dict(_raw(text_dir)), max_perplexity=5.0)
    assert baseline_bound_missed(cfg, 4.9) is None
    assert "above the task's documented ceiling 5.0" in baseline_bound_missed(cfg, 5.2)


def test_bad_text_sources_name_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="unknown text source 'books'; choose one of hamlet, wikitext2, dir"):
        read_texts("books")
    (tmp_path / "train.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no val text"):
        read_texts("dir", str(tmp_path))
    with pytest.raises(ValueError, match="fewer than one window"):
        (tmp_path / "valid.txt").write_text("ab")
        (tmp_path / "test.txt").write_text("abcdefghijkl")
        text_lm(config_from_dict(_raw(tmp_path)), source="dir", path=str(tmp_path), tokenizer="bytes", context=8)


def test_hamlet_lm_splits_the_play_in_order_without_overlap():
    task = get_task("hamlet-lm", "quick")
    assert task.config.metric == "perplexity" and task.config.kind == "lm"
    texts, origin = read_texts("hamlet")
    assert origin.endswith("hamlet.txt")
    whole = "".join(texts[s] for s in ("train", "val", "test"))
    assert whole.startswith("\nThe Tragedy of Hamlet") or whole.lstrip().startswith("The Tragedy of Hamlet")
    assert texts["test"] and texts["val"] and len(texts["train"]) > 7 * len(texts["test"])
    info = task.data().info
    assert info["tokens"]["train"] == 20000 and info["tokenizer"] == "ByteTokenizer"
    inputs = task.example_inputs(2)
    logits = task.build_model()(**inputs)
    assert logits.shape == (2, 128, 256)


def test_compress_from_python_selects_on_perplexity(text_dir):
    """slimbench.compress(metric="perplexity"): a sensitivity scan on a causal LM of the user's own
    scores validation windows by perplexity and records it under that name."""
    import slimbench
    from slimbench.tasks.base import Task

    task = Task(config_from_dict(_raw(text_dir)))
    model = task.build_model()
    batches = list(task.loader("train", 4))[:2]
    out = slimbench.compress(model, "prune.sensitivity:sparsity=0.3", val=batches, calibration=batches,
                             train=batches, metric="perplexity")
    assert out.metrics["val_perplexity_unpruned"] > 1 and "val_accuracy_unpruned" not in out.metrics
    with pytest.raises(ConfigError, match="unknown metric 'ppl'"):
        slimbench.compress(model, "prune.magnitude", metric="ppl")
