"""The distillation family: its losses against hand-written formulas, students (derived shapes,
inheritance from the teacher, layer maps), feature taps, bad input, and the default seeds."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slimbench.core.config import ConfigError
from slimbench.methods import create_method


def _feature_terms(student, teacher, ctx):
    """(FeatureLoss, hint term, attention term) of `student` against `teacher` on 8 validation items."""
    from slimbench.methods.common.children import layer_map
    from slimbench.methods.distill.features import FeatureLoss

    feats = FeatureLoss(student, teacher, layer_map(teacher, student, (), "x"), 1.0, "distill.feature")
    inputs = ctx.example_inputs(8)
    student(**inputs)
    with torch.no_grad():
        teacher(**inputs)
    hint, attn = feats(inputs)
    feats.close()
    return feats, hint, attn


def _logits(n=6, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3, torch.randn(n, c, generator=g) * 3, torch.randint(0, c, (n,), generator=g)


def test_kd_loss_is_hintons_formula():
    from slimbench.methods.common.losses import kd_loss

    s, t, y = _logits()
    T, alpha = 3.0, 0.7
    p_t, p_s = F.softmax(t / T, -1), F.softmax(s / T, -1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    want = alpha * T * T * kl + (1 - alpha) * F.cross_entropy(s, y)
    torch.testing.assert_close(kd_loss(s, t, y, T, alpha), want)
    assert kd_loss(t, t, y, T, 1.0).abs() < 1e-6  # a student equal to its teacher has nothing to learn


def test_dkd_reassembles_kd():
    """KD = TCKD + (1 - p_t[target]) * NCKD per example (the identity DKD decouples): with alpha=1,
    beta=1-p_t and no cross-entropy, DKD equals the soft KD term."""
    from slimbench.methods.common.losses import dkd_loss, kd_loss

    T = 2.0
    for seed in range(4):
        s, t, y = _logits(n=1, seed=seed)
        beta = 1 - float(F.softmax(t / T, -1)[0, y[0]])
        torch.testing.assert_close(dkd_loss(s, t, y, T, 1.0, beta, ce=0.0), kd_loss(s, t, y, T, 1.0),
                                   rtol=1e-4, atol=1e-6)
    s, t, y = _logits()
    assert dkd_loss(s, t, y, T, 0.0, 1.0, ce=0.0) > 0 and dkd_loss(s, s, y, T, 1.0, 8.0, ce=0.0).abs() < 1e-5


@pytest.mark.parametrize("spec,match", [
    ("distill.kd:temperature=0", "temperature"), ("distill.kd:alpha=1.5", "alpha"), ("distill.kd:alpha=-0.1", "alpha"),
    ("distill.dkd:temperature=-1", "temperature"), ("distill.kd:width=0", "width"),
    ("distill.kd:layer_map=1;1", "repeats"), ("distill.dkd:alpha=0,beta=0,ce=0", "nothing to train"),
])
def test_bad_configs_fail_before_work(spec, match):
    with pytest.raises(ConfigError, match=match):
        create_method(spec)


def _ctx(conformance_tasks, name, seed=0):
    from slimbench.suite.context import make_context
    task, baseline = conformance_tasks[name]
    return make_context(task, baseline=baseline, seed=seed), baseline


def test_students_derived_inherited_and_flagged(conformance_tasks):
    from slimbench.methods.distill.configs import StudentConfig
    from slimbench.methods.distill.students import build_student

    ctx, teacher = _ctx(conformance_tasks, "toy-transformer")
    student, over, info = build_student(ctx, StudentConfig(init="leading"), "distill.kd")
    assert over == {"num_hidden_layers": 1, "intermediate_size": 48} and info["layer_map"] == [1]
    s_layer = student.model.bert.encoder.layer[0]
    t_layer = teacher.model.bert.encoder.layer[1]
    torch.testing.assert_close(s_layer.attention.self.query.weight, t_layer.attention.self.query.weight)
    torch.testing.assert_close(s_layer.intermediate.dense.weight, t_layer.intermediate.dense.weight[:48])
    assert "note" not in info and info["params_ratio"] > 1

    big, _, info = build_student(ctx, StudentConfig(width=2.0, depth=1.0), "distill.kd")
    assert "larger than its teacher" in info["note"]
    with pytest.raises(ConfigError, match="teacher has layers 0..1"):
        build_student(ctx, StudentConfig(layer_map=(5,)), "distill.kd")
    with pytest.raises(ConfigError, match="1 layers"):
        build_student(ctx, StudentConfig(layer_map=(0, 1)), "distill.kd")

    ctx, teacher = _ctx(conformance_tasks, "toy-cnn")
    student, over, info = build_student(ctx, StudentConfig(width=0.5, init="leading"), "distill.kd")
    assert over["channels"] == [16, 24, 24, 48] and over["layers"] == [1, 1, 1, 1] and over["stem_width"] == 8
    torch.testing.assert_close(student.net.layer4[0].conv2.weight,
                               teacher.net.layer4[0].conv2.weight[:48, :48].contiguous())
    scratch, _, info = build_student(ctx, StudentConfig(width=0.5, init="scratch"), "distill.kd")
    assert "tensors_inherited" not in info
    with pytest.raises(ConfigError, match="names transformer layers"):
        build_student(ctx, StudentConfig(layer_map=(0,)), "distill.kd")


@pytest.mark.parametrize("task_name", ["toy-cnn", "toy-transformer"])
def test_ranked_init_keeps_the_most_important_units(conformance_tasks, task_name):
    """The importance-ranked teacher copy computes what the teacher does (a full-width student
    inherits it exactly), and a narrower student keeps the units of largest L1 norm (transformer
    FFN neurons; a CNN's coupled groups are scored whole, so the check is that whole teacher
    filters were chosen, not leading slices)."""
    from slimbench.methods.distill.configs import StudentConfig
    from slimbench.methods.distill.students import build_student

    ctx, teacher = _ctx(conformance_tasks, task_name)
    x = ctx.example_inputs(8)
    full, _, info = build_student(ctx, StudentConfig(width=1.0, depth=1.0), "distill.kd")
    assert info["tensors_sliced"] == 0 and info["tensors_fresh"] == 0
    with torch.no_grad():
        torch.testing.assert_close(full.eval()(**x), teacher(**x), rtol=1e-4, atol=1e-4)
    narrow, _, info = build_student(ctx, StudentConfig(width=0.5, depth=1.0), "distill.kd")
    if task_name == "toy-transformer":
        t_up, s_up = teacher.model.bert.encoder.layer[0].intermediate.dense, \
            narrow.model.bert.encoder.layer[0].intermediate.dense
        t_down = teacher.model.bert.encoder.layer[0].output.dense
        norms = t_up.weight.abs().sum(1) + t_down.weight.abs().sum(0)
        kept = norms.sort(descending=True).values[:s_up.out_features]
        got = s_up.weight.abs().sum(1) + narrow.model.bert.encoder.layer[0].output.dense.weight.abs().sum(0)
        torch.testing.assert_close(got, kept)
    else:  # whole coupled groups are scored (conv, its BatchNorm, the convs reading it): compare outcomes
        assert info["tensors_fresh"] == 0 and "Torch-Pruning" in info["inherited"]
        leading, _, _ = build_student(ctx, StudentConfig(width=0.5, depth=1.0, init="leading"), "distill.kd")
        assert not torch.equal(leading.net.conv1[0].weight, narrow.net.conv1[0].weight)
        rows = {tuple(r.flatten().tolist()) for r in teacher.net.conv1[0].weight}  # kept filters are the teacher's
        assert all(tuple(r.flatten().tolist()) in rows for r in narrow.net.conv1[0].weight)


def test_attention_maps_match_the_models_own(conformance_tasks):
    """The attention maps feature distillation matches, computed from the hooked query/key
    projections, are the ones the model's eager attention computes (padding included)."""
    from slimbench.methods.distill.features import Taps, attention_logprobs

    task, model = conformance_tasks["toy-transformer"]
    inputs = task.example_inputs(4)
    layer = model.model.bert.encoder.layer[0]
    taps = Taps({"q": layer.attention.self.query, "k": layer.attention.self.key})
    with torch.no_grad():
        out = model.model(**inputs, output_attentions=True)
    taps.close()
    mine = attention_logprobs(taps.out["q"], taps.out["k"], layer.attention.self.num_attention_heads,
                              inputs["attention_mask"]).exp()
    theirs = out.attentions[0]
    keep = inputs["attention_mask"].bool()[:, None, :, None].expand_as(mine)  # rows of real tokens
    torch.testing.assert_close(mine[keep], theirs[keep], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("task_name", ["toy-cnn", "toy-transformer"])
def test_feature_terms_are_finite_and_trainable(conformance_tasks, task_name):
    from slimbench.methods.distill.configs import StudentConfig
    from slimbench.methods.distill.students import build_student

    ctx, teacher = _ctx(conformance_tasks, task_name)
    student, _, _ = build_student(ctx, StudentConfig(width=0.5), "distill.feature")
    feats, hint, attn = _feature_terms(student, teacher, ctx)
    assert torch.isfinite(hint) and hint > 0 and torch.isfinite(attn) and attn >= 0
    hint.backward()
    if task_name == "toy-cnn":  # one 1x1 projection per stage, student channels -> teacher channels, all trained
        assert sorted(feats.projections) == ["s0", "s1", "s2", "s3"]
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in feats.projections.parameters())
    else:  # the width-0.5 student narrows FFNs only: hidden states share the teacher's width, nothing to project
        assert student.model.config.hidden_size == teacher.model.config.hidden_size and not len(feats.projections)
        assert attn > 0 and feats.averaged == []  # same head count: matched head by head
    assert any(p.grad is not None for p in student.parameters())


def test_kd_moves_the_student_towards_the_teacher(conformance_tasks):
    """With alpha=1 the only signal is the teacher: training must bring the student's distribution
    closer to the teacher's on validation inputs than it was at the start."""
    import dataclasses

    from slimbench.methods.distill.configs import KDConfig
    from slimbench.methods.distill.plugins import KD
    from slimbench.suite.context import make_context

    task, baseline = conformance_tasks["toy-transformer"]
    ctx = make_context(task, baseline=baseline, seed=0,
                       finetune=dataclasses.replace(task.config.finetune, steps=30))
    method = KD(KDConfig(alpha=1.0, init="scratch", temperature=2.0))
    x = ctx.example_inputs(32)

    def gap(model):
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(model(**x), -1), F.log_softmax(baseline(**x), -1),
                                  reduction="batchmean", log_target=True))
    from slimbench.methods.distill.students import build_student
    start = gap(build_student(ctx, method.config, "distill.kd")[0].eval())
    result = method.compress(baseline, ctx)
    assert gap(result.model) < 0.5 * start
    assert result.metrics["alpha"] == 1.0 and result.build_overrides == {"num_hidden_layers": 1, "intermediate_size": 48}


def test_teacher_cache_hits_only_repeated_batches(conformance_tasks):
    from slimbench.methods.distill.plugins import _teacher_logits

    _, baseline = conformance_tasks["toy-cnn"]
    stats = {"forwards": 0, "hits": 0}
    logits = _teacher_logits(baseline, {}, stats)
    a = {"pixel_values": torch.randn(2, 1, 16, 16)}
    b = {"pixel_values": torch.randn(2, 1, 16, 16)}
    first = logits(a)
    logits(b)
    torch.testing.assert_close(logits(a), first)
    assert stats == {"forwards": 2, "hits": 1}


def test_distillation_runs_three_seeds_by_default():
    from slimbench.suite.runner import plan

    specs = plan(["toy"], ["distill.kd", "baseline"], None, "quick")
    assert sorted(s.seed for s in specs if s.method == "distill.kd") == [0, 1, 2]
    assert [s.seed for s in specs if s.method == "baseline"] == [0]
    assert len(plan(["toy"], ["distill.kd"], [5], "quick")) == 1


def test_unsupported_without_a_derivable_student(toy_task):
    """The MLP task has neither ResNet stages nor transformer layers: no student can be derived, so
    the run is UNSUPPORTED (with what to do instead) unless the student is given."""
    reason = create_method("distill.kd").supports(toy_task.spec(), "cpu")
    assert "student=" in reason
    assert create_method('distill.kd:{"student": {"hidden": [16]}}').supports(toy_task.spec(), "cpu") is None


# ------------------------------------------------------------------ student=input: the given model is the student

def test_input_student_spec_round_trips_from_every_source(tmp_path):
    """`student` is builder arguments or the literal 'input', from a spec string, JSON or a YAML file,
    and the canonical spec and label say it back."""
    m = create_method("distill.kd:student=input,temperature=2.5")
    assert m.config.student == "input" and m.starts_from == "input"
    assert m.spec == "distill.kd:temperature=2.5,student=input" and create_method(m.spec).config == m.config
    assert m.label == "distill.kd temperature=2.5 student=input"
    assert create_method('distill.kd:{"student": "input"}').config == create_method("distill.kd:student=input").config
    path = tmp_path / "kd.yaml"
    path.write_text("method: distill.dkd\nstudent: input\nbeta: 4\n")
    from slimbench.core.config import spec_from_file
    assert create_method(spec_from_file(path)).config == create_method("distill.dkd:student=input,beta=4").config
    given = create_method('distill.kd:{"student": {"num_hidden_layers": 1}}')
    assert given.config.student == {"num_hidden_layers": 1} and given.starts_from == "teacher"
    assert create_method(given.spec).config == given.config
    control = create_method("distill.kd:student=input").control()  # the no-teacher row is plain fine-tuning
    assert control["method"] == "distill.scratch" and control["config"]["student"] == "input"


@pytest.mark.parametrize("spec,match", [
    ("distill.kd:student=input,width=0.5", "width=0.5 cannot apply"),
    ("distill.dkd:student=input,depth=0.25,init=scratch", "depth=0.25, init=scratch cannot apply"),
    ("distill.scratch:student=input,layer_map=1", "layer_map=1 cannot apply"),
    ("distill.feature:student=input,init=leading", "init=leading cannot apply"),
    ("distill.kd:student=inputs", "student='inputs' matches none of dict.* | 'input'"),
])
def test_input_student_rejects_what_cannot_apply(spec, match):
    with pytest.raises(ConfigError, match=match):
        create_method(spec)


def test_feature_input_student_keeps_layer_map():
    """Feature distillation still chooses which teacher layer each student layer imitates."""
    assert create_method("distill.feature:student=input,layer_map=0;1").config.layer_map == (0, 1)


def _pruned(conformance_tasks, task_name):
    """The baseline structurally pruned (half the channels, or one of two heads per layer), untrained."""
    import copy

    ctx, baseline = _ctx(conformance_tasks, task_name)
    return create_method("prune.structured:ratio=0.5,finetune=false").compress(copy.deepcopy(baseline), ctx).model


@pytest.mark.parametrize("task_name", ["toy-cnn", "toy-transformer"])
@pytest.mark.parametrize("name", ["distill.kd", "distill.dkd", "distill.feature", "distill.scratch"])
def test_input_student_trains_the_given_model(name, task_name, conformance_tasks):
    """Every distillation method, student=input: the model it is given (here a pruned one) is the
    student, trained in place against the frozen teacher, its architecture kept (no builder overrides)."""
    pruned = _pruned(conformance_tasks, task_name)
    shapes = {k: v.shape for k, v in pruned.state_dict().items()}
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    ctx, teacher = _ctx(conformance_tasks, task_name)
    result = create_method(f"{name}:student=input").compress(pruned, ctx)
    assert result.model is pruned and result.build_overrides == {}
    assert {k: v.shape for k, v in result.model.state_dict().items()} == shapes
    assert any(not torch.equal(before[k], v) for k, v in result.model.state_dict().items())  # it trained
    assert result.metrics["student"] == "input" and result.metrics["params_ratio"] > 1
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values() if v.is_floating_point())
    assert ctx.ledger.summary()["finetune"]["used"] == ctx.budget_steps
    assert ("control" in result.metrics) == (name != "distill.scratch")
    if name == "distill.feature" and task_name == "toy-transformer":  # 1 head vs the teacher's 2 in both layers
        assert result.metrics["attention_head_averaged"] == [0, 1] and result.metrics["final_attention_loss"] > 0


def test_feature_projections_map_pruned_channels_and_heads(conformance_tasks):
    """Between a pruned student and the teacher, each CNN stage's projection takes the student's own
    (pruned) channel count to the teacher's, and attention maps of layers that lost heads are matched
    head-averaged; all terms finite and trainable."""
    from slimbench.methods.common.children import resnet_stages
    from slimbench.methods.distill.features import _channels

    for task_name in ("toy-cnn", "toy-transformer"):
        student = _pruned(conformance_tasks, task_name)
        ctx, teacher = _ctx(conformance_tasks, task_name)
        feats, hint, attn = _feature_terms(student, teacher, ctx)
        (hint + attn).backward()
        assert torch.isfinite(hint) and hint > 0 and torch.isfinite(attn)
        grads = [p.grad for p in student.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)  # padded keys must not poison them
        if task_name == "toy-cnn":
            pairs = [(_channels(s), _channels(t)) for s, t in zip(resnet_stages(student), resnet_stages(teacher))]
            assert any(c_s < c_t for c_s, c_t in pairs)  # the pruning narrowed some stage outputs
            assert [(p.in_channels, p.out_channels) for p in feats.projections.values()] == pairs
            assert all(p.weight.grad is not None for p in feats.projections.values())
        else:
            assert feats.heads == [(1, 2), (1, 2)] and feats.averaged == [0, 1] and attn > 0
