"""The coreml target (work in progress): .mlpackage saved, re-loaded, every compressed weight decoded
bit-exactly from the package (no Core ML runtime exists on Linux)."""

import os

import pytest

pytest.importorskip("coremltools")

from edgec.compiler import fix_input_shapes, load_model  # noqa: E402
from edgec.host import host  # noqa: E402
from edgec.ir.passes import PassContext, PassManager, parse_pipeline  # noqa: E402
from edgec.plugins.cleanup import DEFAULT_CLEANUP  # noqa: E402
from edgec.targets.coreml import CoreMLTarget  # noqa: E402


@pytest.mark.parametrize("pipe, n", [("", 0), ("quantize{bits=8,scale_dtype=f16}", 4),
                                     ("quantize{bits=4,group=16,ops=Linear,head_bits=4,scale_dtype=f16},"
                                      "quantize{bits=8,ops=Conv,scale_dtype=f16}", 4)])
def test_package_weights_decode_exactly(pipe, n, tiny_cnn_path, tmp_path):
    m = load_model(tiny_cnn_path)
    fix_input_shapes(m, {}, [])
    PassManager(parse_pipeline(DEFAULT_CLEANUP + ("," + pipe if pipe else ""), host().passes.as_dict())).run(
        m, PassContext())
    t = CoreMLTarget()
    assert t.check(m) == []
    art = t.emit(m, str(tmp_path), PassContext())
    assert art.manifest["decoded_bit_exact"] == n == len(art.manifest["compressed_weights"])
    assert os.path.isdir(tmp_path / "model.mlpackage")


def test_float32_scales_are_refused_with_the_fix(tiny_cnn_path, tmp_path):
    from edgec.errors import UnsupportedError
    m = load_model(tiny_cnn_path)
    fix_input_shapes(m, {}, [])
    PassManager(parse_pipeline(DEFAULT_CLEANUP + ",quantize{bits=8}", host().passes.as_dict())).run(m, PassContext())
    with pytest.raises(UnsupportedError, match="scale_dtype=f16"):
        CoreMLTarget().emit(m, str(tmp_path), PassContext())
