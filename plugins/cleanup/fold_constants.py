"""fold-constants: evaluate nodes whose inputs are all constants, replacing them by their results.

Evaluation uses onnxruntime (the engine behind the reference executor, so folding never changes the
numbers a model computes), falling back to the ONNX reference implementation for ops onnxruntime lacks
(the reference has bugs of its own, e.g. GatherElements on some shapes). Quantized
weights are never folded through (that would discard their quantization), and results larger than
``max_elements`` stay computed at run time.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import ClassVar

import numpy as np
from onnx import helper

from ...ir import DType, IRError, Model, Node, QuantizedTensor, Tensor, Value
from ...ir.limits import generated_elements
from ...ir.onnx_io import attribute_proto
from ...ir.passes import Pass, PassContext, option

# Ops whose output is not a function of their inputs alone.
_NONDETERMINISTIC = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}


def evaluate(n: Node, opset: int) -> list[np.ndarray]:
    """Run one node on its constant inputs (onnxruntime, else the ONNX reference evaluator). A CastLike needs
    only its first input constant: it runs as the Cast to the second input's dtype."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    op, inputs, attrs = n.op_type, list(n.inputs), {k: attribute_proto(k, a) for k, a in n.attributes.items()}
    like = n.arg(1).dtype if _cast_like_foldable(n) else None  # foldable: input 1 and its dtype are known
    if like is not None:
        op, inputs = "Cast", inputs[:1]
        attrs["to"] = helper.make_attribute("to", like.onnx)
    ins = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    outs = [f"o{k}" for k in range(len(n.outputs))]
    node = helper.make_node(op, ins, outs, domain=n.domain or None)
    node.attribute.extend(attrs.values())
    feeds = {f"i{k}": np.asarray(v.numpy()) for k, v in enumerate(inputs) if v is not None}
    graph = helper.make_graph(
        [node],
        "fold",
        [helper.make_tensor_value_info(i, _dtype(v).onnx, None) for i, v in zip(ins, inputs) if v is not None],
        [helper.make_empty_tensor_value_info(o) for o in outs],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 10)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        res = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception:  # noqa: BLE001 - not implemented there: try the specification's reference
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ReferenceEvaluator(m).run(None, feeds)
    return [np.asarray(r) for r in res]


def _dtype(v: Value) -> DType:
    """The dtype of an input of a node to fold (run() folds only nodes whose inputs all have one)."""
    if v.dtype is None:
        raise IRError(f"value {v.name!r} has no dtype")
    return v.dtype


def _cast_like_foldable(n: Node) -> bool:
    """CastLike(constant, x) reads only x's dtype: foldable once that is known."""
    return (
        n.op_type == "CastLike"
        and not n.domain
        and len(n.inputs) == 2
        and n.inputs[0] is not None
        and n.inputs[0].is_const
        and n.inputs[1] is not None
        and n.inputs[1].dtype is not None
    )


@dataclasses.dataclass(frozen=True)
class FoldConstants(Pass):
    name: ClassVar[str] = "fold-constants"
    summary: ClassVar[str] = "evaluate nodes whose inputs are all constants"
    max_elements: int = option(
        1 << 24, check=lambda v: v > 0, allowed="a positive integer", help="largest result (in elements) that is folded"
    )

    def run(self, model: Model, ctx: PassContext) -> bool:
        g = model.graph
        changed = False
        for n in g:
            if n.domain or n.op_type in _NONDETERMINISTIC or n.op_type == "Constant":
                continue
            ins = [n.arg(0)] if _cast_like_foldable(n) else [v for v in n.inputs if v is not None]
            if not all(v.is_const and not isinstance(v.const, QuantizedTensor) for v in ins):
                continue
            if any(v.dtype is None for v in ins) or any(x is o for o in n.outputs for x in g.outputs):
                continue  # graph outputs stay computed values with stable names
            k = generated_elements(n)
            if k is not None and k > self.max_elements:
                continue  # never materialize a huge generated constant just to find it is too big
            try:
                results = evaluate(n, model.opset)
            except Exception:  # noqa: BLE001 - an op the reference cannot evaluate is left alone
                continue
            if any(r.size > self.max_elements for r in results):
                continue
            try:
                dts = [DType.from_numpy(r.dtype) for r in results]
            except ValueError:
                continue
            for o, r, dt in zip(n.outputs, results, dts):
                o.replace_all_uses_with(g.add_const(g.unique_name(o.name + "_folded"), Tensor(r, dt)))
            g.remove(n)
            changed = True
        if changed:
            g.remove_unused_consts()
        return changed
