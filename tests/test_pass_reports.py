"""Pass reports travel in their own channel (``Model.reports``), not as JSON strings in model metadata: the manifest
reads them, IR files keep them, and an artifact never carries them."""

from __future__ import annotations

import os

from edgec.compiler import compile as compile_model
from edgec.host import host
from edgec.ir import load, parse_model, print_model, save
from edgec.ir.passes import PassContext, PassManager, parse_pipeline
from edgec.plugins.quantize.quantize import REPORT_KEY


def test_quantize_reports_are_structured_and_survive_ir_files(mlp, tmp_path):
    m = mlp
    PassManager(parse_pipeline("quantize{bits=4}", host().passes.as_dict())).run(m, PassContext())
    rep = m.reports[REPORT_KEY]
    assert rep["w1"]["bits"] == 4 and rep["w1"]["node"] == "fc1" and rep["w1"]["sqnr_db"] > 10, rep
    assert REPORT_KEY not in m.metadata
    save(m, str(tmp_path / "m.edgec"))
    assert load(str(tmp_path / "m.edgec")).reports == m.reports
    assert parse_model(print_model(m)).reports == m.reports


def test_the_manifest_has_the_reports_and_the_artifact_does_not(tiny_cnn_path, tmp_path):
    out = str(tmp_path / "ov")
    r = compile_model(tiny_cnn_path, "openvino", "quantize{bits=8}", out, use_cache=False)
    weights = r.manifest["quantization"]["weights"]
    assert weights and all(w["bits"] == 8 for w in weights.values())
    with open(os.path.join(out, "model.xml"), encoding="utf-8") as f:
        xml = f.read()
    assert "edgec_metadata" in xml and REPORT_KEY not in xml
