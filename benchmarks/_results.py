"""Shared by the benchmark scripts: write a results table next to them and echo it; export an example
architecture to the cleaned-up IR."""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def write_results(name: str, lines: list[str]) -> str:
    """Write ``lines`` to ``benchmarks/name`` and print them; returns the text."""
    text = "\n".join(lines) + "\n"
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return text


def export_example(name: str, work: str, batch: int = 1) -> str:
    """An example architecture (examples/models) exported to ONNX in ``work`` (once per folder); its path. ``batch``
    repeats the example inputs."""
    import sys
    import warnings

    import torch

    sys.path.insert(0, os.path.join(HERE, "..", "examples", "models"))
    import architectures

    path = os.path.join(work, f"{name}-b{batch}.onnx")
    if not os.path.exists(path):
        m, ex, names = architectures.build(name)
        ex = tuple(t.repeat(batch, *([1] * (t.dim() - 1))) for t in ex)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, ex, path, dynamo=False, opset_version=17, input_names=names, output_names=["out"])
    return path


def example_ir(name: str, work: str, batch: int = 1):
    """:func:`export_example` imported, shapes fixed and the default cleanup run: the IR every benchmark starts
    from (a fresh IR on every call)."""
    from edgec.compiler import fix_input_shapes, load_model
    from edgec.host import host
    from edgec.ir.passes import PassManager, parse_pipeline
    from edgec.plugins.cleanup import DEFAULT_CLEANUP

    model = load_model(export_example(name, work, batch))
    fix_input_shapes(model, {}, [])
    PassManager(parse_pipeline(DEFAULT_CLEANUP, host().passes.as_dict())).run(model)
    return model


SMOL_EVAL = "/usr/share/common-licenses/GPL-3"
SMOL_CALIB = ["/usr/share/common-licenses/Apache-2.0", "/usr/share/common-licenses/MPL-2.0"]


def smol_texts(work: str, eval_chars: int = 20000) -> tuple[str, str]:
    """The language-model benchmarks' texts written into ``work``: (evaluation text: the first ``eval_chars``
    characters of GPL-3, calibration text: Apache-2.0 + MPL-2.0), disjoint."""
    eval_txt, calib_txt = os.path.join(work, "eval.txt"), os.path.join(work, "calib.txt")
    with open(SMOL_EVAL, encoding="utf-8") as f:
        text = f.read()[:eval_chars]
    with open(eval_txt, "w", encoding="utf-8") as out:
        out.write(text)
    with open(calib_txt, "w", encoding="utf-8") as out:
        for p in SMOL_CALIB:
            with open(p, encoding="utf-8") as f:
                out.write(f.read())
    return eval_txt, calib_txt


def smollm2_bench(work: str, max_samples: int, seq_len: int):
    """SmolLM2-135M-Instruct as the language-model benchmarks start from: imported, cleaned up and saved to
    ``work/base``; a pass context calibrated on Apache-2.0 + MPL-2.0 (``max_samples`` windows of ``seq_len``
    tokens); the token ids of the first 12,000 characters of GPL-3 (the evaluation text, disjoint).

    Returns (model, path of the saved base, pass context, evaluation ids, pass registry)."""
    import numpy as np
    from edgec.calibration import load_calibration
    from edgec.compiler import load_model
    from edgec.host import host
    from edgec.ir.passes import PassContext, PassManager, parse_pipeline
    from edgec.ir.serde import save
    from edgec.plugins.cleanup import DEFAULT_CLEANUP
    from edgec.plugins.llm.bundled import smollm2_path
    from edgec.api.tokenizer import tokenizer_for

    _, calib_txt = smol_texts(work)
    m = load_model(smollm2_path())
    reg = host().passes.as_dict()
    ctx = PassContext(
        config={"seed": 0},
        calibration=load_calibration(calib_txt, m, seed=0, max_samples=max_samples, seq_len=seq_len),
        passes=reg,
        checks=host().checks.as_dict(),
    )
    PassManager(parse_pipeline(DEFAULT_CLEANUP, reg)).run(m, ctx)
    base = os.path.join(work, "base")
    save(m, base)
    text = open(SMOL_EVAL, encoding="utf-8").read()[:12000]
    ids = np.array(tokenizer_for(m).encode(text, add_bos=True), np.int64)
    return m, base, ctx, ids, reg


def run_and_score(base: str, pipe: str, reg, ctx, ids):
    """The saved base model with ``pipe`` run on it (timed) and its perplexity on ``ids`` (reference executor,
    256-token windows, stride 256). Returns (model, pass seconds, perplexity result)."""
    import time

    from edgec.ir.passes import PassManager, parse_pipeline
    from edgec.ir.serde import load
    from edgec.plugins.llm.perplexity import perplexity, reference_engine

    mm = load(base)
    t0 = time.perf_counter()
    if pipe:
        PassManager(parse_pipeline(pipe, reg)).run(mm, ctx)
    t_pass = time.perf_counter() - t0
    return mm, t_pass, perplexity(ids, reference_engine(mm), ctx=256, stride=256, engine="reference", progress=False)
