"""The Python API on a model that is no standard task's: one method of each family through
`slimbench.compress`, saved, reloaded from the bytes, measured; missing arguments named; tracked
runs read back as DataFrames."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch

import slimbench

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def _user_model_builder():
    """A user's own timm ResNet (3 classes, RGB 24x24): not a task's model."""
    import timm
    return functools.partial(timm.create_model, "test_resnet", num_classes=3, in_chans=3, pretrained=False)


def _data(n_batches: int, seed: int, batch: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (image, label) as a user's DataLoader yields them; the label is the brightest channel."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        x = torch.randn(batch, 3, 24, 24, generator=g)
        y = torch.randint(0, 3, (batch,), generator=g)
        x[torch.arange(batch), y] += 1.0
        out.append((x, y))
    return out


@pytest.fixture(scope="module")
def user():
    build = _user_model_builder()
    torch.manual_seed(0)
    model = build().eval()
    return model, build


# one method of each family, with the arguments it needs
CASES = {
    "quant.gptq": dict(calibration=_data(2, 1)),
    "prune.magnitude:sparsity=0.5": dict(train=_data(4, 2), budget=3),
    "lowrank.tucker:flops=0.5": dict(calibration=_data(2, 1), train=_data(4, 2), val=_data(1, 3), budget=2),
    "distill.kd": dict(train=_data(4, 2), val=_data(1, 3), budget=2, build=True),
    "nas.random": dict(train=_data(4, 2), val=_data(1, 3), candidates=2, proxy_steps=1, build=True),
}


@pytest.mark.parametrize("spec", list(CASES))
def test_each_family_compresses_a_users_model_and_reloads_from_its_bytes(spec, user, tmp_path):
    model, build = user
    kwargs = dict(CASES[spec])
    if kwargs.pop("build", False):
        kwargs["build_model"] = build
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = slimbench.compress(model, spec, seed=0, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model is untouched
    assert small.budget["finetune"]["used"] <= small.budget["finetune"]["budget"] == kwargs.get("budget", 0)
    sizes = slimbench.save(small, tmp_path / "art")
    assert sizes["size_bytes"] > 0
    again = slimbench.load(tmp_path / "art", build)
    x = _data(1, 9, batch=4)[0][0]
    with torch.no_grad():
        torch.testing.assert_close(again(x), small.model.eval()(x), rtol=1e-4, atol=1e-4)
    m = slimbench.measure(small, x, batch_sizes=(1, 4), quick=True)
    assert m["size_bytes"] == sizes["size_bytes"]
    assert m["flops_effective"] > 0 and set(m["latency_ms"]) == {1, 4}
    assert all(v > 0 for v in m["latency_ms"].values()) and m["execution_paths"]


def test_measure_a_plain_model_as_the_baseline(user):
    model, _ = user
    m = slimbench.measure(model, torch.randn(2, 3, 24, 24), quick=True)
    params = sum(p.numel() for p in model.parameters())
    assert m["params_total"] >= params and m["size_bytes"] > 4 * params and set(m["latency_ms"]) == {2}


@pytest.mark.parametrize("spec,kwargs,argument", [
    ("quant.gptq", {}, "calibration"),
    ("prune.magnitude", {"budget": 2}, "train"),
    ("distill.kd", {"train": _data(1, 0), "budget": 1}, "build_model"),
    ("nas.random", {"train": _data(1, 0), "candidates": 1, "proxy_steps": 1}, "build_model"),
])
def test_a_missing_argument_is_named(spec, kwargs, argument, user):
    model, _ = user
    with pytest.raises(slimbench.MissingInput, match=f"pass {argument}="):
        slimbench.compress(model, spec, **kwargs)


def test_bad_batches_and_unknown_methods_are_refused(user):
    model, _ = user
    with pytest.raises(TypeError, match="batch 0 is a Tensor"):
        slimbench.compress(model, "quant.gptq", calibration=[torch.randn(2, 3, 24, 24)])
    with pytest.raises(Exception, match="quant.nope"):
        slimbench.compress(model, "quant.nope")


def test_results_as_dataframes(tmp_path):
    """A notebook's first cell: the tracked runs, one row per run and seed, and the leaderboard rows."""
    from pathlib import Path

    from slimbench.suite.cli import main

    toy = str(Path(__file__).parent / "fixtures" / "toy.yaml")
    assert main(["run", "--task-file", toy, "--tasks", "toy", "--profile", "quick", "--results-dir",
                 str(tmp_path), "--method", "prune.magnitude", "--seeds", "2", "--no-progress",
                 "--no-leaderboard"]) == 0
    runs = slimbench.results(tmp_path)
    assert set(runs["method_name"]) == {"baseline", "prune.magnitude"}
    pruned = runs[runs["method_name"] == "prune.magnitude"]
    assert sorted(pruned["seed"]) == [0, 1] and (pruned["status"] == "FINISHED").all()
    assert pruned["accuracy"].dtype.kind == "f" and (pruned["size_bytes"] > 0).all()
    assert any(c.startswith("latency_ms_cpu_bs1") for c in runs.columns)
    board = slimbench.results(tmp_path, leaderboard=True)
    row = board[board["method"].str.startswith("prune.magnitude")].iloc[0]
    assert list(row["seeds"]) == [0, 1] and row["size_bytes"] > 0
    assert slimbench.results(tmp_path, method="baseline")["method_name"].tolist() == ["baseline"]


def test_the_readme_example_runs():
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "python_api.py"
    proc = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "method reported:" in proc.stdout and "'latency_ms': {1:" in proc.stdout


def test_train_batches_alone_serve_as_example_inputs():
    """Pruning times its sparse kernels on example inputs: with neither val nor calibration given,
    the training batches provide them (only validation-based selection needs val)."""
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    train = [(torch.randn(8, 32), torch.randint(0, 3, (8,))) for _ in range(3)]
    small = slimbench.compress(model, "prune.magnitude:sparsity=0.9", train=train, budget=2)
    assert small.metrics["kernel_choice"]["sparse_linear_layers"] == 2
