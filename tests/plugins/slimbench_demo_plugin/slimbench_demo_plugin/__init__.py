"""A plugin method living outside slimbench: stores every weight rounded to `decimals` in fp16.

It exists so the test-suite proves that `pip install` of a distribution with a
`slimbench.methods` entry point makes a method appear with no change to slimbench.
"""
from dataclasses import dataclass, field

from slimbench.methods import Method, MethodConfig, check


@dataclass(frozen=True)
class RoundConfig(MethodConfig):
    decimals: int = field(default=2, metadata={"help": "decimal places kept"})
    sleep_s: float = field(default=0.0, metadata={"help": "seconds to wait first (tests of timeouts and killed workers)"})

    def __post_init__(self):  # MethodConfig still type-checks the fields first
        check(0 <= self.decimals <= 6, f"decimals={self.decimals} must be in 0..6")


class RoundWeights(Method):
    family = "quantization"
    description = "Demo plugin: round floating weights to a few decimals (stored in fp32)."
    config_cls = RoundConfig

    def compress(self, model, ctx):
        import time

        import torch  # lazily: `slimbench list` must not pay for torch

        time.sleep(self.config.sleep_s)

        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.round(p, decimals=self.config.decimals))
        return model
