"""Configs of the distillation methods: typed, torch-free, each checked by `MethodConfig`.

Every method trains the same kind of student (`StudentConfig`: how it is shrunk from the task's
model and how it is initialised, or `student=input`: the model the method is given, e.g. a pruned
one in a pipeline), so the no-teacher control and the KD variants differ in their loss alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from slimbench.core.config import MethodConfig, check, setting

STUDENT_HELP = ("the student's model-builder arguments (the task's `model.kwargs` overridden), given in a config "
                "file or as JSON, e.g. {\"channels\": [16, 24, 24, 48]} for a timm ResNet or "
                "{\"num_hidden_layers\": 2} for a transformer; empty: derived from depth and width; 'input': the "
                "model the method is given is the student (e.g. the pruned model of an earlier pipeline stage), "
                "trained as it is against the frozen teacher (depth, width and init do not apply)")
WIDTH_HELP = ("when `student` is empty: channels of a timm ResNet, or FFN neurons of a transformer, scaled by "
              "this (kept multiples of 8); above 1 makes a larger student (allowed, flagged in the run)")
DEPTH_HELP = ("when `student` is empty: fraction of a transformer's layers kept (at least one), or of each "
              "ResNet stage's blocks (at least one per stage)")
INIT_HELP = ("teacher: the student starts from the teacher's weights, student layer i from teacher layer "
             "layer_map[i], the most important channels / FFN neurons (largest L1 norm; CNN channel groups kept "
             "consistent by Torch-Pruning's dependency graph); leading: the same, each tensor's leading "
             "channels/neurons; scratch: the task builder's fresh init")
MAP_HELP = ("teacher layers the student's transformer layers copy and (feature distillation) imitate, "
            "';'-separated indices; empty: evenly spaced, ending with the last layer (6 -> 3: 1;3;5)")


def _shown(value: Any) -> str:
    """A value as it is written in a spec (`layer_map=1;3`)."""
    return ";".join(map(str, value)) if isinstance(value, tuple) else str(value)


@dataclass(frozen=True)
class StudentConfig(MethodConfig):
    """A student built by the task's own builder, trained for the task's fine-tuning budget."""

    student: dict[str, Any] | Literal["input"] = setting(help=STUDENT_HELP, default_factory=dict)
    depth: float = setting(0.5, DEPTH_HELP, gt=0, le=1)
    width: float = setting(0.75, WIDTH_HELP, gt=0, le=4)
    init: Literal["teacher", "leading", "scratch"] = setting("teacher", INIT_HELP)
    layer_map: tuple[int, ...] = setting((), MAP_HELP, ge=0)
    lr_scale: float = setting(1.0, "the task's fine-tuning learning rate times this (a student far from its "
                                   "teacher's function may recover faster with a larger one); the step budget is "
                                   "the task's either way", gt=0, le=100)

    # with student=input there is nothing to derive or copy: these fields do not apply (FeatureConfig
    # keeps layer_map, which also says which teacher layer each student layer imitates)
    INPUT_UNUSED: ClassVar[tuple[str, ...]] = ("depth", "width", "init", "layer_map")

    @property
    def from_input(self) -> bool:
        """Whether the student is the model the method is given (`student=input`)."""
        return self.student == "input"

    def validate(self) -> None:
        check(len(set(self.layer_map)) == len(self.layer_map),
              f"layer_map={list(self.layer_map)} repeats a teacher layer; name each once")
        if self.from_input:
            default = type(self)()
            unused = [f"{k}={_shown(getattr(self, k))}" for k in self.INPUT_UNUSED
                      if getattr(self, k) != getattr(default, k)]
            check(not unused, f"student=input trains the given model as it is, so {', '.join(unused)} cannot apply "
                              f"(they shape and initialise a derived student); drop them, or give no student=input")


@dataclass(frozen=True)
class ScratchConfig(StudentConfig):
    """The control: the same student, budget and seeds, trained on the labels alone."""


@dataclass(frozen=True)
class KDConfig(StudentConfig):
    temperature: float = setting(4.0, "T: both logit vectors are divided by it before the softmax", gt=0)
    alpha: float = setting(0.9, "weight of the soft (teacher) term; 1 - alpha weights cross-entropy on the labels",
                           ge=0, le=1)
    cache_teacher: bool = setting(False, "keep the teacher's logits per distinct training batch and reuse them "
                                         "when the same batch comes again (saves teacher forwards only when the "
                                         "budget spans more than one pass over unaugmented data; hits recorded)")


@dataclass(frozen=True)
class DKDConfig(StudentConfig):
    temperature: float = setting(4.0, "T of both softened distributions", gt=0)
    alpha: float = setting(1.0, "weight of TCKD, the target-vs-rest term", ge=0)
    beta: float = setting(8.0, "weight of NCKD, the term over the non-target classes", ge=0)
    ce: float = setting(1.0, "weight of cross-entropy on the labels", ge=0)
    warmup: float = setting(0.2, "fraction of the budget over which the KD terms ramp up linearly from 0 "
                                 "(DKD's large beta destabilises the first steps otherwise)", ge=0, lt=1)

    def validate(self) -> None:
        super().validate()
        check(self.alpha + self.beta + self.ce > 0, "alpha, beta and ce are all 0: nothing to train on")


@dataclass(frozen=True)
class FeatureConfig(KDConfig):
    """Logit KD plus intermediate features: FitNets-style hints through learned 1x1 projections
    (CNN stages), hidden states and attention maps (transformer layers, TinyBERT/MiniLM-style)."""

    INPUT_UNUSED: ClassVar[tuple[str, ...]] = ("depth", "width", "init")

    feature: float = setting(1.0, "weight of the feature (hint / hidden-state MSE) term", ge=0)
    attention: float = setting(1.0, "transformers: weight of the attention-map KL term (per head, over valid "
                                    "keys); ignored for CNNs", ge=0)
