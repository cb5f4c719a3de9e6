"""Compress your own model from Python: prune a timm ResNet with your data, save, reload, measure.

    python examples/python_api.py

Any registered method works the same way ("quant.gptq", "distill.kd", "prune.nm", a pipeline
"a+b", a plugin); `slimbench list methods` names them. Replace the model and the batches with yours:
batches are (inputs, labels) pairs, as a DataLoader yields them.
"""
import tempfile

import timm
import torch

import slimbench


def build():
    return timm.create_model("test_resnet", num_classes=3, in_chans=3)


def batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


model = build().eval()  # your trained model
small = slimbench.compress(model, "prune.magnitude:sparsity=0.7", train=batches(8, 0), val=batches(2, 1),
                           budget=8)  # fine-tuning steps the method may take
print("method reported:", {k: small.metrics[k] for k in ("sparsity", "kept_weights")})
with tempfile.TemporaryDirectory() as out:
    print("artifact:", slimbench.save(small, out))
    reloaded = slimbench.load(out, build)  # from the bytes alone
    x = torch.randn(8, 3, 32, 32)
    print("measured:", slimbench.measure(reloaded, x, batch_sizes=(1, 8), quick=True))
