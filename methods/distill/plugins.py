"""The distillation method plugins, registered without importing torch.

Each builds a student with the task's own builder (`students`), trains it for the task's whole
fine-tuning budget with its loss, and returns it with the builder overrides, so the artifact
reloads as `task.build_model(**overrides)` plus the saved tensors. With `student=input` the student
is the model `compress` is given instead (a pruned model in `prune.structured+distill.kd:student=input`),
its architecture kept, so nothing is overridden. The last step is what is measured (no
best-checkpoint picking). `distill.scratch` is the control every KD row is read against: same
student, init, budget and seeds, labels only (with `student=input`: plain fine-tuning).
"""
from __future__ import annotations

from typing import Any, ClassVar

from slimbench.methods.base import Compressed, CompressionContext, Method, register_method
from slimbench.methods.distill.configs import DKDConfig, FeatureConfig, KDConfig, ScratchConfig, StudentConfig


class DistillMethod(Method):
    """A student trained against the frozen teacher (`_loss`); subclasses choose the loss."""

    family = "distillation"
    followable = True  # a dense student
    config_cls = StudentConfig
    default_seeds: ClassVar[int] = 3  # KD gains are often within seed noise: the default suite runs three

    @property
    def starts_from(self) -> str:  # type: ignore[override]
        """A derived or given student starts from the teacher (its input is ignored); student=input
        trains the input."""
        return "input" if self.config.from_input else "teacher"

    def supports(self, task, device):
        return None if self.config.student else self.model_reason(task)

    def model_unsupported(self, model):
        """Unsupported (not failed) when no student is given and the model is neither a timm ResNet
        nor a transformers encoder, the kinds students are derived for."""
        from slimbench.methods.common.children import hf_config, resnet_stages
        if hf_config(model) is not None or resnet_stages(model) is not None:
            return None
        return (f"{self.name} derives students for timm ResNets and transformers encoders; give this task's "
                "student as builder arguments (student={...} in a config file or JSON)")

    def _loss(self, student, teacher, ctx: CompressionContext, info: dict[str, Any]):
        """(loss function for the trainer or None for cross-entropy, extra parameter groups, cleanup)."""
        return None, [], None

    def compress(self, model, ctx: CompressionContext) -> Compressed:
        from slimbench.methods.distill.students import build_student, input_student

        student, over, info = input_student(model, ctx) if self.config.from_input else \
            build_student(ctx, self.config, self.name)
        loss, extra, cleanup = self._loss(student, ctx.teacher, ctx, info)
        try:
            if ctx.budget_steps > 0:
                groups = [{"params": list(student.parameters())}, *extra]
                recipe = ctx.recipe(lr=ctx.lr * self.config.lr_scale)
                ctx.trainer.fit(student, ctx.train_batches(), recipe, ctx.seed, loss=loss,
                                param_groups=groups, desc=f"{self.name} student")
        finally:
            if cleanup is not None:
                cleanup()
        student.eval()
        info[f"student_val_{ctx.task.metric or 'accuracy'}"] = round(ctx.val_metric(student), 5)
        if self.name != "distill.scratch":
            info["control"] = self.control()
        return Compressed(student, metrics=info, build_overrides=over)

    def control(self) -> dict[str, Any]:
        """The no-teacher row this run is read against: distill.scratch with the same student
        (the leaderboard finds it by these fields and says whether the teacher helped)."""
        import dataclasses

        from slimbench.core.config import to_dict
        shared = {f.name for f in dataclasses.fields(StudentConfig)} - {"version"}
        return {"method": "distill.scratch", "config": {k: v for k, v in to_dict(self.config).items() if k in shared}}


@register_method("distill.scratch")
class Scratch(DistillMethod):
    description = ("Control: the distillation student (same architecture, init, budget and seeds) trained on the "
                   "labels alone, so every KD row shows what the teacher bought.")
    config_cls = ScratchConfig


def _teacher_logits(teacher, cache: dict | None, stats: dict[str, int]):
    """teacher(**inputs) under no_grad, optionally cached by the batch's bytes."""
    import hashlib

    import torch

    def logits(inputs: dict):
        key = None
        if cache is not None:
            h = hashlib.sha1()
            for k in sorted(inputs):
                h.update(k.encode())
                h.update(inputs[k].detach().cpu().numpy().tobytes())
            key = h.hexdigest()
            if key in cache:
                stats["hits"] += 1
                return cache[key].to(next(iter(inputs.values())).device)
        with torch.no_grad():
            out = teacher(**inputs)
        stats["forwards"] += 1
        if key is not None:
            cache[key] = out.detach().cpu()
        return out
    return logits


@register_method("distill.kd")
class KD(DistillMethod):
    description = ("Hinton knowledge distillation: a smaller student trained on the teacher's softened logits "
                   "(T^2-scaled KL, batchmean) plus cross-entropy, weights alpha / 1 - alpha.")
    config_cls = KDConfig

    def _loss(self, student, teacher, ctx, info):
        from slimbench.methods.common.losses import teacher_kd

        c = self.config
        stats = {"forwards": 0, "hits": 0}
        loss = teacher_kd(_teacher_logits(teacher, {} if c.cache_teacher else None, stats), c.temperature, c.alpha)

        info.update(temperature=c.temperature, alpha=c.alpha)
        if c.cache_teacher:
            def cleanup():
                info["teacher_cache"] = dict(stats)
            return loss, [], cleanup
        return loss, [], None


@register_method("distill.dkd")
class DKD(DistillMethod):
    description = ("Decoupled KD: target-class (TCKD) and non-target-class (NCKD) KL terms weighted apart "
                   "(alpha, beta), plus cross-entropy; KD terms ramped in over a warm-up.")
    config_cls = DKDConfig

    def _loss(self, student, teacher, ctx, info):
        import torch

        from slimbench.methods.common.losses import dkd_loss

        c = self.config
        ramp = max(1, int(c.warmup * ctx.budget_steps))
        step = [0]

        def loss(model, inputs, logits, labels):
            with torch.no_grad():
                t = teacher(**inputs)
            scale = min(1.0, (step[0] + 1) / ramp)
            step[0] += 1
            return dkd_loss(logits, t, labels, c.temperature, scale * c.alpha, scale * c.beta, c.ce)

        info.update(temperature=c.temperature, alpha=c.alpha, beta=c.beta)
        return loss, [], None


@register_method("distill.feature")
class Feature(DistillMethod):
    description = ("Feature distillation: logit KD plus FitNets-style stage hints through learned 1x1 projections "
                   "(CNNs) or hidden-state MSE and attention-map KL per mapped layer (transformers).")
    config_cls = FeatureConfig

    def _loss(self, student, teacher, ctx, info):
        import torch

        from slimbench.methods.common.losses import kd_loss
        from slimbench.methods.distill.features import FeatureLoss
        from slimbench.methods.common.children import layer_map

        c = self.config
        mapping = layer_map(teacher, student, c.layer_map, self.name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            feats = FeatureLoss(student, teacher, mapping, c.attention, self.name)
        if mapping:
            info.setdefault("layer_map", mapping)
        if feats.kind == "transformer" and feats.averaged and c.attention:
            info["attention_head_averaged"] = feats.averaged  # student layers whose head count differs
        feats.projections.to(ctx.device)
        parts = {"feature": 0.0, "attention": 0.0}

        def loss(model, inputs, logits, labels):
            with torch.no_grad():
                t = teacher(**inputs)
            hint, attn = feats(inputs)
            parts["feature"], parts["attention"] = float(hint.detach()), float(attn.detach())
            return kd_loss(logits, t, labels, c.temperature, c.alpha) + c.feature * hint + c.attention * attn

        def cleanup():
            feats.close()
            info["final_feature_loss"] = round(parts["feature"], 6)
            if feats.kind == "transformer":
                info["final_attention_loss"] = round(parts["attention"], 6)

        info.update(temperature=c.temperature, alpha=c.alpha, feature_kind=feats.kind)
        groups = [{"params": list(feats.projections.parameters())}] if len(feats.projections) else []
        return loss, groups, cleanup
