"""Training recipes and the budgets that keep a benchmark honest.

A task grants every method the same fine-tuning budget (optimizer steps) and, for search
methods, the same search budget (candidates x proxy steps). The `StepLedger` is where the
steps a method really used are counted: the trainer charges it before each training call, a
method that asks for more than is left fails with `BudgetExceeded`, and the run record keeps
the used-vs-granted figures. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from slimbench.core.config import ConfigError, check

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class TrainRecipe:
    """An optimizer recipe with its budget in optimizer steps."""

    steps: int
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.1  # fraction of steps
    schedule: str = "cosine"  # cosine | linear | constant
    grad_clip: float | None = 1.0
    optimizer: str = "adamw"  # adamw | adam | sgd
    momentum: float = 0.9  # sgd only

    def __post_init__(self):
        check(self.steps >= 0, f"steps={self.steps} must be >= 0")
        check(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        check(self.lr > 0, f"lr={self.lr} must be > 0")
        check(0 <= self.warmup < 1, f"warmup={self.warmup} must be in [0, 1)")
        check(self.schedule in SCHEDULES, f"schedule={self.schedule!r}; choose {', '.join(SCHEDULES)}")
        check(self.optimizer in OPTIMIZERS, f"optimizer={self.optimizer!r}; choose {', '.join(OPTIMIZERS)}")
        check(0 <= self.momentum < 1, f"momentum={self.momentum} must be in [0, 1)")


@dataclass(frozen=True)
class SearchBudget:
    """What a search method may spend: `candidates` architectures, each trained for at most
    `proxy_steps` optimizer steps before it is scored on the validation split."""

    candidates: int = 0
    proxy_steps: int = 0

    def __post_init__(self):
        check(self.candidates >= 0, f"search candidates={self.candidates} must be >= 0")
        check(self.proxy_steps >= 0, f"search proxy_steps={self.proxy_steps} must be >= 0")

    @property
    def steps(self) -> int:
        return self.candidates * self.proxy_steps


class BudgetExceeded(ConfigError):
    """A method asked for more optimizer steps than its budget has left."""


FINETUNE, SEARCH = "finetune", "search"


@dataclass
class StepLedger:
    """Optimizer steps granted and used per account (`finetune`, `search`)."""

    owner: str
    granted: dict[str, int]
    used: dict[str, int] = field(default_factory=dict)

    candidates: int = 0  # search candidates logged (recorded; the steps are what is binding)

    def count_candidates(self, n: int) -> None:
        self.candidates += n

    def charge(self, steps: int, account: str = FINETUNE) -> None:
        """Book `steps` when they are asked for (whether or not the training then completes, so the
        figure cannot be gamed by retrying); raise BudgetExceeded, booking nothing, if they do not fit."""
        if account not in self.granted:
            raise BudgetExceeded(f"{self.owner} trains on the {account!r} budget, which this run does not grant "
                                 f"(granted: {', '.join(f'{k}={v}' for k, v in self.granted.items()) or 'none'})")
        used = self.used.get(account, 0)
        if used + steps > self.granted[account]:
            raise BudgetExceeded(f"{self.owner} asked for {steps} optimizer steps of its {account} budget, but only "
                                 f"{self.granted[account] - used} of {self.granted[account]} are left "
                                 f"({used} used)")
        self.used[account] = used + steps

    def child(self, owner: str, granted: dict[str, int]) -> "StepLedger":
        """A ledger for one stage of a pipeline: its own grant, and every step and candidate it books is
        booked here too, so the run's ledger stays the sum of its stages'."""
        return _ChildLedger(owner, dict(granted), parent=self)

    def summary(self) -> dict[str, dict[str, int]]:
        """{account: {"used", "budget"}} for the run record (the search account also counts its candidates)."""
        out = {k: {"used": self.used.get(k, 0), "budget": v} for k, v in self.granted.items()}
        if SEARCH in out:
            out[SEARCH]["candidates"] = self.candidates
        return out


@dataclass
class _ChildLedger(StepLedger):
    parent: StepLedger | None = None

    def charge(self, steps: int, account: str = FINETUNE) -> None:
        if self.parent is not None:  # the run's ledger first: a refusal there books nothing here either
            self.parent.charge(steps, account)
        try:
            super().charge(steps, account)
        except BudgetExceeded:
            if self.parent is not None:
                self.parent.used[account] -= steps
            raise

    def count_candidates(self, n: int) -> None:
        self.candidates += n
        if self.parent is not None:
            self.parent.count_candidates(n)
