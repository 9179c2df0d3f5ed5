"""The ``coreml`` target (work in progress, issue 6): edgec IR -> an ML Program built with coremltools' MIL
builder, saved as ``.mlpackage``.

Done so far: CNN ops (conv incl. grouped/dilated, pools, global pooling, reductions, activations, add/mul,
flatten/reshape, Linear), fp16 compute with fp32 I/O, float weights in fp16, and uniform quantized weights
as ``constexpr_blockwise_shift_scale`` (int8 per channel, int4 per block, true sub-byte storage; scales
must be float16 values: ``quantize{scale_dtype=f16}``). Verification, off macOS: (a) the saved package is
re-loaded and every compressed weight decoded bit-exactly against the IR's weight; (b) ``--verify``
re-executes the saved MIL program with edgec's numpy evaluator (``evaluate.py``, tested op by op against
onnxruntime). Not yet: palettization / sparsity, transformer and decoder ops, ``deployment=`` restrictions,
a macOS ``predict`` test and the comparison benchmark.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ...errors import UnsupportedError
from ...hookspecs import hookimpl
from ...ir import Model, Node, QuantizedTensor, Value
from ...ir.passes import PassContext, option
from ...target import Artifact, Capabilities, Lowerings, Target

LOWERINGS = Lowerings()
lowering = LOWERINGS.register
_QUANT = frozenset({("symmetric", b) for b in (4, 8)} | {("asymmetric", b) for b in (4, 8)})


def _ct():
    try:
        import coremltools as ct
        from coremltools.converters.mil import Builder as mb
        from coremltools.converters.mil.mil import types
    except ImportError:
        raise UnsupportedError("the coreml target needs coremltools: pip install 'coremltools>=9'") from None
    return ct, mb, types


class MILBuilder:
    """Lowers one model inside an ``mb.program`` body."""

    def __init__(self, model: Model):
        self.ct, self.mb, self.types = _ct()
        self.model = model
        self.env: dict[int, object] = {}
        self.compressed: dict[str, str] = {}  # weight name -> MIL op name of its constexpr

    def weight(self, v: Value):
        mb, types = self.mb, self.types
        q = v.const
        if not isinstance(q, QuantizedTensor):
            return np.asarray(q.numpy(), np.float32).astype(np.float16)
        codes = np.asarray(q.codes)
        signed = q.scheme == "symmetric"
        if q.bits <= 4:
            dt = types.np_int4_dtype if signed else types.np_uint4_dtype
        else:
            dt = np.int8 if signed else np.uint8
        scale = np.asarray(q.scales, np.float32)
        if scale.ndim != codes.ndim:
            scale = scale.reshape(scale.shape + (1,) * (codes.ndim - scale.ndim))
        s16 = scale.astype(np.float16)
        if not np.array_equal(s16.astype(np.float32), scale):
            raise UnsupportedError(f"weight {v.name!r}: Core ML stores fp16 scales; quantize with "
                                   "quantize{scale_dtype=f16} so they are exact")
        kw = {"data": codes.astype(dt), "scale": s16}
        if q.zero_points is not None:
            zp = np.asarray(q.zero_points).reshape(scale.shape)
            kw["offset"] = zp.astype(dt)
        name = _mil_name(v.name) + "_dq"
        self.compressed[v.name] = name
        return mb.constexpr_blockwise_shift_scale(name=name, **kw)

    def get(self, v: Value):
        if id(v) not in self.env:
            if not v.is_const:
                raise KeyError(v.name)
            if isinstance(v.const, QuantizedTensor) or v.dtype.is_float:
                self.env[id(v)] = self.weight(v)
            else:
                self.env[id(v)] = np.asarray(v.const.numpy())
        return self.env[id(v)]

    def lower(self, x):
        mb = self.mb
        g = self.model.graph
        self.env[id(g.inputs[0])] = mb.cast(x=x, dtype="fp16")
        for n in g:
            fn = LOWERINGS.get(n.qualified_op)
            if fn is None:
                raise UnsupportedError(f"node {n.name!r}: {n.qualified_op} is not supported by the coreml target yet")
            self.env[id(n.outputs[0])] = fn(self, n)
        return [mb.cast(x=self.get(o), dtype="fp32", name=_mil_name(o.name)) for o in g.outputs]


def _mil_name(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else "v_" + out


def _pads(n: Node) -> list[int]:
    if n.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedError(f"node {n.name!r}: auto_pad={n.attr('auto_pad')} is not supported")
    p = list(n.attr("pads", [0, 0, 0, 0]))
    k = len(p) // 2
    return [v for i in range(k) for v in (p[i], p[i + k])]  # Core ML: [top, bottom, left, right]


@lowering("Conv")
def _conv(b: MILBuilder, n: Node):
    kw = {"x": b.get(n.inputs[0]), "weight": b.get(n.inputs[1]), "strides": list(n.attr("strides", [1, 1])),
          "dilations": list(n.attr("dilations", [1, 1])), "groups": n.attr("group", 1), "pad_type": "custom",
          "pad": _pads(n)}
    if len(n.inputs) > 2 and n.inputs[2] is not None:
        kw["bias"] = b.get(n.inputs[2])
    return b.mb.conv(**kw)


@lowering("edgec::Linear")
def _linear(b, n):
    kw = {"x": b.get(n.inputs[0]), "weight": b.get(n.inputs[1])}
    if len(n.inputs) > 2 and n.inputs[2] is not None:
        kw["bias"] = b.get(n.inputs[2])
    return b.mb.linear(**kw)


@lowering("Relu", "Sigmoid", "Tanh")
def _act(b, n):
    return getattr(b.mb, n.op_type.lower())(x=b.get(n.inputs[0]))


@lowering("HardSigmoid")
def _hardsigmoid(b, n):
    return b.mb.sigmoid_hard(x=b.get(n.inputs[0]), alpha=float(n.attr("alpha", 0.2)), beta=float(n.attr("beta", 0.5)))


@lowering("HardSwish")
def _hardswish(b, n):
    x = b.get(n.inputs[0])
    return b.mb.mul(x=x, y=b.mb.sigmoid_hard(x=x, alpha=1.0 / 6.0, beta=0.5))


@lowering("Add", "Mul", "Sub")
def _binary(b, n):
    fn = {"Add": b.mb.add, "Mul": b.mb.mul, "Sub": b.mb.sub}[n.op_type]
    return fn(x=b.get(n.inputs[0]), y=b.get(n.inputs[1]))


@lowering("MaxPool", "AveragePool")
def _pool(b, n):
    kw = {"x": b.get(n.inputs[0]), "kernel_sizes": list(n.attr("kernel_shape")),
          "strides": list(n.attr("strides", [1, 1])), "pad_type": "custom", "pad": _pads(n),
          "ceil_mode": bool(n.attr("ceil_mode", 0))}
    if n.op_type == "AveragePool":
        return b.mb.avg_pool(exclude_padding_from_average=not n.attr("count_include_pad", 0), **kw)
    return b.mb.max_pool(**kw)


@lowering("GlobalAveragePool")
def _gap(b, n):
    return b.mb.reduce_mean(x=b.get(n.inputs[0]), axes=[2, 3], keep_dims=True)


@lowering("ReduceMean", "ReduceSum", "ReduceMax")
def _reduce(b, n):
    v = n.inputs[1] if len(n.inputs) > 1 else None
    axes = [int(a) for a in np.asarray(v.const.numpy()).reshape(-1)] if v is not None else n.attr("axes")
    fn = {"ReduceMean": b.mb.reduce_mean, "ReduceSum": b.mb.reduce_sum, "ReduceMax": b.mb.reduce_max}[n.op_type]
    return fn(x=b.get(n.inputs[0]), axes=list(axes), keep_dims=bool(n.attr("keepdims", 1)))


@lowering("Flatten", "Reshape")
def _reshape(b, n):
    shape = n.outputs[0].static_shape
    if shape is None:
        raise UnsupportedError(f"node {n.name!r}: the coreml target needs static shapes")
    return b.mb.reshape(x=b.get(n.inputs[0]), shape=list(shape))


@dataclasses.dataclass(frozen=True)
class CoreMLTarget(Target):
    name: ClassVar[str] = "coreml"
    summary: ClassVar[str] = "Core ML ML Program (.mlpackage), work in progress: CNNs, fp16 / int8 / int4 weights"
    runtime: ClassVar[str] = ("edgec's MIL evaluator (numpy) on the saved package: Core ML itself does not run "
                              "on Linux")
    verify_policy: ClassVar[dict | None] = {
        "min_cosine": 0.999, "min_top1": 0.95,
        "description": "fp16 compute: cosine >= 0.999 and top-1 agreement >= 0.95 vs the reference"}
    capabilities: ClassVar[Capabilities] = Capabilities(ops=LOWERINGS.ops(), quant=_QUANT)
    deployment: str = option("ios18", choices=("ios18",), help="minimum deployment target")

    def check(self, model: Model) -> list[str]:
        problems = super().check(model)
        if len(model.graph.inputs) != 1:
            problems.append("the coreml target (work in progress) takes models with one float input")
        return problems

    def emit(self, model: Model, out_dir: str, ctx: PassContext) -> Artifact:
        ct, mb, types = _ct()
        x = model.graph.inputs[0]
        holder = {}

        def body(inp):
            b = MILBuilder(model)
            holder["b"] = b
            return tuple(b.lower(inp))
        # The program's parameter name is the package's input name: give it the model's.
        arg = _mil_name(x.name)
        ns: dict = {"body": body}
        exec(f"def main({arg}):\n    return body({arg})\n", ns)  # noqa: S102 - a generated one-line wrapper
        prog = mb.program(input_specs=[mb.TensorSpec(shape=tuple(x.static_shape), dtype=types.fp32)],
                          opset_version=ct.target.iOS18)(ns["main"])

        m = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                       compute_precision=ct.precision.FLOAT16)
        path = os.path.join(out_dir, "model.mlpackage")
        if os.path.exists(path):
            shutil.rmtree(path)
        m.save(path)
        decoded = check_package(path, model, holder["b"].compressed)
        files = sorted(os.path.relpath(os.path.join(r, f), out_dir) for r, _, fs in os.walk(path) for f in fs)
        return Artifact(files, {"coremltools_version": ct.__version__, "deployment": self.deployment,
                                              "compressed_weights": holder["b"].compressed,
                                              "decoded_bit_exact": decoded})

    def run_artifact(self, out_dir: str, feeds: Mapping[str, np.ndarray], input_names=None):
        """No Core ML runtime exists off macOS: the saved package is re-executed by edgec's MIL evaluator."""
        from .evaluate import run
        return run(os.path.join(out_dir, "model.mlpackage"), {_mil_name(k): v for k, v in feeds.items()})


def check_package(path: str, model: Model, compressed: dict[str, str]) -> int:
    """Re-load the saved package and decode every compressed weight; each must equal the IR's dequantized
    weight (as fp16, the package's compute type) bit for bit. Returns how many were checked."""
    ct, _, _ = _ct()
    from coremltools.converters.mil.frontend.milproto import load as milproto
    m = ct.models.MLModel(path, skip_model_load=True)
    spec = m.get_spec()
    prog = milproto.load(spec, specification_version=spec.specificationVersion, file_weights_dir=m.weights_dir)
    ops = {op.name: op for op in prog.functions["main"].operations}
    for wname, opname in compressed.items():
        got = np.asarray(ops[opname].materialized_val_inference())
        want = model.graph.initializers[wname].const.dequantize().astype(np.float16)
        if got.shape != want.shape or not np.array_equal(got.astype(np.float16), want):
            raise UnsupportedError(f"weight {wname!r} does not decode to the IR's weight from the saved package")
    return len(compressed)


@hookimpl
def edgec_register_targets(registry):
    registry.register(CoreMLTarget)
