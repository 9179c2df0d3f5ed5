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


def example_ir(name: str, work: str, batch: int = 1):
    """An example architecture (examples/models) exported to ONNX in ``work``, imported, shapes fixed and
    the default cleanup run: the IR every benchmark starts from. ``batch`` repeats the example inputs."""
    import sys
    import warnings

    import torch
    sys.path.insert(0, os.path.join(HERE, "..", "examples", "models"))
    import architectures
    from edgec.compiler import fix_input_shapes, load_model
    from edgec.host import host
    from edgec.ir.passes import PassManager, parse_pipeline
    from edgec.plugins.cleanup import DEFAULT_CLEANUP
    path = os.path.join(work, f"{name}-b{batch}.onnx")
    if not os.path.exists(path):  # exported once per work folder; every call still gets a fresh IR
        m, ex, names = architectures.build(name)
        ex = tuple(t.repeat(batch, *([1] * (t.dim() - 1))) for t in ex)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, ex, path, dynamo=False, opset_version=17, input_names=names, output_names=["out"])
    model = load_model(path)
    fix_input_shapes(model, {}, [])
    PassManager(parse_pipeline(DEFAULT_CLEANUP, host().passes.as_dict())).run(model)
    return model
