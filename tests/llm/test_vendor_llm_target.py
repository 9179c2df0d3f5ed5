"""A vendor's target gets what the built-in ones get, with no line of edgec naming it: perplexity of its artifact
on its own runtime (``Target.logits_engine``), and its native mixed-precision set (``Capabilities.mixed``)."""

from __future__ import annotations

import os

import pytest

import edgec.host
from edgec.host import PluginHost

HERE = os.path.dirname(os.path.dirname(__file__))
TEXT = os.path.join(HERE, "..", "examples", "text", "eval.txt")


class _Host(PluginHost):
    def __init__(self):
        super().__init__(autoload=False)

    def _candidates(self):
        return super()._candidates() + [("vendor-llm", "vendor_llm_plugin", "edgec-vendor-llm", "1.0")]


@pytest.fixture
def vendor_host(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(HERE, "plugins"))
    h = _Host()
    monkeypatch.setattr(edgec.host, "_HOST", h)
    return h


def test_vendor_target_gets_artifact_perplexity(vendor_host, tiny_gguf, tmp_path):
    from edgec.compiler import compile as compile_model
    r = compile_model(tiny_gguf, "vendor-llm", "", str(tmp_path / "a"), eval_text=TEXT, use_cache=False)
    ev = r.manifest["evaluation"]
    assert ev["artifact_engine"] == "vendor runtime"
    # the float model exported as ONNX: its runtime computes what the reference executor computes
    assert abs(ev["artifact_perplexity"] / ev["compiled_perplexity"] - 1) < 1e-3


def test_vendor_target_native_mixed_set(vendor_host):
    from edgec.ir.passes import PassContext
    from edgec.plugins.mixed.mixed import MixedPrecision
    tgt = vendor_host.targets["vendor-llm"]()
    assert MixedPrecision(avg_bits=6.0).choices(PassContext(target=tgt)) == [4, 8]
