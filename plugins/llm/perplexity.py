"""Perplexity of a language model on a text, over sliding windows, on two engines.

Both engines score the same token windows the same way, so their numbers are comparable:

* ``reference``: edgec's reference executor (onnxruntime) running the IR;
* ``llama.cpp``: a GGUF file evaluated by llama.cpp through llama-cpp-python
  (:func:`edgec.api.llama_cpp.llama_cpp_engine`; a compiled artifact's engine is its target's
  :meth:`~edgec.target.Target.logits_engine`).

Windows are ``ctx`` tokens long and start every ``stride`` tokens; the first window scores every
prediction, later ones only the ``stride`` tokens not scored before (each scored token sees at least
``ctx - stride`` tokens of context; with ``stride == ctx`` windows are disjoint and the first token of each
is not scored). ``ppl = exp(mean negative log-likelihood)``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ...errors import UsageError


@dataclasses.dataclass
class PerplexityResult:
    perplexity: float
    nll: float
    tokens_scored: int
    windows: int
    ctx: int
    stride: int
    engine: str
    text_tokens: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (
            f"perplexity {self.perplexity:.4f} ({self.engine}; {self.tokens_scored} tokens scored of "
            f"{self.text_tokens}, {self.windows} windows of {self.ctx} tokens, stride {self.stride})"
        )


def windows(n: int, ctx: int, stride: int) -> list[tuple[int, int, int]]:
    """``(start, end, first_scored)`` per window: tokens ``[start, end)`` are fed, predictions of tokens
    ``[first_scored, end)`` are scored."""
    if ctx < 2 or not 0 < stride <= ctx:
        raise UsageError(f"perplexity needs ctx >= 2 and 0 < stride <= ctx (got ctx={ctx}, stride={stride})")
    out, scored_to, start = [], 1, 0
    while True:
        end = min(start + ctx, n)
        if end - start < 2:
            break
        out.append((start, end, max(scored_to, start + 1)))
        scored_to = end
        if end == n:
            break
        start += stride
    return out


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Sum of -log p(target) for rows of ``logits`` (float64 log-softmax)."""
    z = logits.astype(np.float64)
    m = z.max(-1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(-1)) + m[:, 0]
    return float(np.sum(lse - z[np.arange(len(targets)), targets]))


def perplexity(
    ids: list[int] | np.ndarray, logits_fn, *, ctx: int, stride: int, engine: str, progress: bool = True
) -> PerplexityResult:
    """``logits_fn(tokens) -> [len(tokens), vocab]`` is the engine."""
    from tqdm import tqdm

    ids = np.asarray(ids, np.int64)
    wins = windows(len(ids), ctx, stride)
    if not wins:
        raise UsageError(f"the text has {len(ids)} tokens; perplexity needs at least 2")
    total, count = 0.0, 0
    for start, end, first in tqdm(
        wins, desc=f"perplexity ({engine})", unit="window", leave=False, disable=None if progress else True
    ):
        logits = logits_fn(ids[start:end])
        # logits[i] predicts token start + i + 1
        lo = first - start - 1
        total += _nll(logits[lo : end - start - 1], ids[first:end])
        count += end - first
    nll = total / count
    return PerplexityResult(math.exp(nll), nll, count, len(wins), ctx, stride, engine, int(len(ids)))


def reference_engine(model):
    from ...ir import ReferenceExecutor

    ex = ReferenceExecutor(model)

    def run(tokens: np.ndarray) -> np.ndarray:
        return ex.run({"input_ids": np.asarray(tokens, np.int64)[None]})["logits"][0]

    return run


def top1_agreement(ids, fn_a, fn_b, *, ctx: int, stride: int, progress: bool = True) -> dict:
    """Next-token top-1 agreement of two engines on the same windows (every scored position of
    :func:`perplexity`), with both perplexities."""
    from tqdm import tqdm

    ids = np.asarray(ids, np.int64)
    wins = windows(len(ids), ctx, stride)
    if not wins:
        raise UsageError(f"the text has {len(ids)} tokens; agreement needs at least 2")
    agree = count = 0
    nll_a = nll_b = 0.0
    for start, end, first in tqdm(
        wins, desc="top-1 agreement", unit="window", leave=False, disable=None if progress else True
    ):
        lo = first - start - 1
        a = fn_a(ids[start:end])[lo : end - start - 1]
        b = fn_b(ids[start:end])[lo : end - start - 1]
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        count += end - first
        nll_a += _nll(a, ids[first:end])
        nll_b += _nll(b, ids[first:end])
    return {
        "top1_agreement": agree / count,
        "tokens": count,
        "windows": len(wins),
        "perplexity_a": math.exp(nll_a / count),
        "perplexity_b": math.exp(nll_b / count),
    }
