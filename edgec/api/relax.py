"""edgec IR -> TVM Relax: the lowering library every TVM-based target builds on (``cpu``, ``hexagon``, a vendor's).

A target gets from here what it needs to turn a model into a Relax ``IRModule`` and then compiles that its own
way (its TVM target, its passes, its runtime): :class:`RelaxBuilder` (one model -> a ``main`` function, with
the hook :meth:`RelaxBuilder.lower_special` for a target's own kernels), ``LOWERINGS`` (the native lowering of
every op the library computes exactly; ``supported_ops()``), ``FALLBACK_OPS`` and :func:`refuse_variant` (the
ops, and the variants of them, lowered through TVM's own Relax ONNX converters as measured right),
:func:`pack_codes` and :func:`vector_arrays` (how quantized weights are stored), and :func:`safe_name`.

The Relax is built directly with ``relax.BlockBuilder`` (not TVM's ONNX importer). Shapes must be static (the
compiler fixes input shapes before lowering). Quantized ``edgec::Linear`` weights stay packed integer constants
(int4 two per byte) and are dequantized inside the generated matmul kernel, which is written in TE so
dequantization and accumulation are one loop nest; vector-quantized weights stay indices + codebooks, gathered
from the codebook inside the matmul.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ..errors import UnsupportedError
from ..ir import ActivationQuant, DType, Model, Node, QuantizedTensor, Tensor, Value
from ..target import Encoders, Lowerings

LOWERINGS = Lowerings()
lowering = LOWERINGS.register


# Lowerings that compute float16 inputs in float32 (cast in, cast the float16 outputs back): the reductions whose
# float16 accumulation differed from onnx's results by a few ulps.
_WIDEN_F16 = frozenset(
    {"MatMul", "ReduceMean", "ReduceSum", "Conv", "AveragePool", "GlobalAveragePool", "edgec::Linear"}
)


def supported_ops() -> frozenset[str]:
    return LOWERINGS.ops()


# Ops without a native lowering that the cpu target lowers node by node through TVM's own Relax ONNX converters
# (tvm.relax.frontend.onnx), each measured right on onnx's backend node suite (benchmarks/coverage.py). Left out:
# ops whose TVM converter gave wrong answers there (BitShift by negative / >= width amounts, IsInf's
# detect_negative / detect_positive, Mish and Softplus beyond rtol 1e-3 near zero, NonMaxSuppression), converters
# for another domain's op of the same name (com.microsoft Attention, BiasGelu, FastGelu, ...), and sequence /
# optional ops (the IR holds tensors only); EyeLike, OneHot and RMSNormalization, which the decompose pass writes
# exactly (a constant, a compare and select, onnx's body) where TVM's converters need constant parameters or
# fail on axis 0. Variants measured wrong are refused by refuse_variant.
FALLBACK_OPS: frozenset[str] = frozenset(
    {
        "Acos",
        "Acosh",
        "AffineGrid",
        "ArgMax",
        "ArgMin",
        "Asin",
        "Asinh",
        "Atan",
        "Atanh",
        "BitwiseAnd",
        "BitwiseNot",
        "BitwiseOr",
        "BitwiseXor",
        "CastLike",
        "Ceil",
        "Compress",
        "ConstantOfShape",
        "ConvTranspose",
        "Cos",
        "Cosh",
        "CumSum",
        "DepthToSpace",
        "DequantizeLinear",
        "Dropout",
        "DynamicQuantizeLinear",
        "Einsum",
        "Elu",
        "Floor",
        "Gelu",
        "Gemm",
        "GlobalLpPool",
        "GlobalMaxPool",
        "GreaterOrEqual",
        "GridSample",
        "GroupNormalization",
        "Hardmax",
        "Identity",
        "InstanceNormalization",
        "IsNaN",
        "LRN",
        "LeakyRelu",
        "LessOrEqual",
        "LogSoftmax",
        "LpPool",
        "MatMulInteger",
        "MaxRoiPool",
        "MaxUnpool",
        "Mean",
        "MeanVarianceNormalization",
        "Mod",
        "NonZero",
        "Or",
        "PRelu",
        "Pad",
        "QuantizeLinear",
        "Range",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceSumSquare",
        "Resize",
        "RoiAlign",
        "Round",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "Selu",
        "Shape",
        "Shrink",
        "Sign",
        "Sin",
        "Sinh",
        "Size",
        "Softsign",
        "SpaceToDepth",
        "Split",
        "Sum",
        "Tan",
        "ThresholdedRelu",
        "Tile",
        "TopK",
        "Trilu",
        "Unique",
        "Upsample",
        "Xor",
    }
)


def refuse_variant(n: Node) -> str | None:
    """Why TVM's converter must not take this node (a variant it was measured to get wrong), or None."""
    op = n.op_type
    if op == "Resize":
        xs, ys = cast(Value, n.inputs[0]).static_shape, n.outputs[0].static_shape
        if n.attr("antialias", 0):
            return "Resize with antialias=1 is not supported (TVM's converter does not antialias)"
        ctm = n.attr("coordinate_transformation_mode", "half_pixel")
        ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
        if ctm not in ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel", "tf_half_pixel_for_nn"):
            return f"Resize with coordinate_transformation_mode={ctm} is not supported by TVM's converter"
        if n.attr("axes") is not None or n.attr("keep_aspect_ratio_policy", "stretch") not in ("stretch", b"stretch"):
            return "Resize with axes or keep_aspect_ratio_policy is not supported by TVM's converter"
        if n.attr("mode", "nearest") != "nearest" and (xs is None or ys is None or any(y < x for x, y in zip(xs, ys))):
            return f"Resize {n.attr('mode')} downsampling is not supported (TVM's converter computes it wrong)"
    if op in ("QuantizeLinear", "DequantizeLinear") and int(n.attr("block_size", 0) or 0):
        return f"blocked {op} is not supported by TVM's converter"
    if op == "RoiAlign" and n.attr("mode", "avg") == "max":
        return "RoiAlign mode=max is not supported (TVM's converter computes it wrong)"
    if op == "SpaceToDepth" and n.attr("mode", "DCR") != "DCR":
        return f"SpaceToDepth mode={n.attr('mode')} is not supported (TVM's converter computes DCR)"
    if op in ("TopK", "Unique") and cast(Value, n.inputs[0]).dtype == DType.UINT64:
        return f"{op} of uint64 is not supported (TVM's sort has no uint64 kernel at run time)"
    if (
        op == "Dropout"
        and len(n.inputs) > 2
        and n.inputs[2] is not None
        and (not n.inputs[2].is_const or bool(np.asarray(n.inputs[2].numpy()).any()))
    ):
        return "Dropout in training mode is not supported (random masks)"
    if op == "Dropout" and len(n.outputs) > 1:
        return "Dropout's mask output is not supported by TVM's converter (it gives float32, not bool)"
    return None


def tvm_fallback(b: RelaxBuilder, n: Node) -> list[Any]:
    """Lower ``n`` with TVM's Relax ONNX converter for its op at the model's opset: inputs are the Relax values
    already built, attributes parsed as TVM's importer parses them (from the node's ONNX attribute protos)."""
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx

    from ..ir.onnx_io import attribute_proto

    where = f"node {n.name!r}: {n.qualified_op} (opset {b.model.opset}) through TVM's ONNX converter"
    conv = tvm_onnx._get_convert_map().get(n.op_type) if n.domain in ("", "ai.onnx") else None
    if conv is None:
        raise UnsupportedError(f"{where}: TVM has no converter for it")
    why = refuse_variant(n)
    if why is not None:
        raise UnsupportedError(f"{where}: {why}")
    try:
        protos = [attribute_proto(k, v) for k, v in n.attributes.items() if not (isinstance(v, list) and not v)]
        attr = tvm_onnx.ONNXGraphImporter._parse_attr(None, protos)
        attr["tvm_custom"] = {"name": n.name, "num_outputs": len(n.outputs)}
        inputs = tvm_onnx.onnx_input()
        for v in n.inputs:
            inputs.append(None if v is None else b.get(v))
        fn = conv.get_converter(b.model.opset)
        sym = fn(b.bb, inputs, attr, [{}, {}])
        if isinstance(sym, relax.Tuple):
            items = list(sym.fields)
        elif isinstance(sym, (list, tuple)):
            items = list(sym)
        else:
            sym = b.bb.normalize(sym)
            if isinstance(sym.ty, relax.TupleType):
                var = sym if isinstance(sym, relax.Var) else b.emit(sym)
                items = [relax.TupleGetItem(var, i) for i in range(len(sym.ty.fields))]
            else:
                items = [sym]
        outs = []
        for it in items:
            it = b.bb.normalize(it)
            if isinstance(it.ty, relax.ShapeType):
                it = b.bb.normalize(_op().shape_to_tensor(it))
            if not isinstance(it.ty, relax.TensorType):
                raise UnsupportedError(f"{where}: it gives a {type(it.ty).__name__}, not a tensor")
            outs.append(it if isinstance(it, relax.Var) else b.emit(it))
    except UnsupportedError:
        raise
    except Exception as e:  # noqa: BLE001 - the converter refusing the node, in whatever way it does
        raise UnsupportedError(f"{where}: the converter failed ({type(e).__name__}: {_first_line(e)})") from None
    return outs


class RelaxBuilder:
    """Translates one model; ``build()`` returns an IRModule with a ``main`` function."""

    def __init__(self, model: Model, fallback_ops: frozenset[str] | None = None):
        from tvm import relax

        self.fallback_ops = FALLBACK_OPS if fallback_ops is None else fallback_ops
        self.relax = relax
        self.model = model
        self.bb = relax.BlockBuilder()
        self.env: dict[int, object] = {}

    # helpers -----------------------------------------------------------------------------------------------
    def get(self, v: Value) -> Any:
        if id(v) in self.env:
            return self.env[id(v)]
        if v.is_const:
            if isinstance(v.const, QuantizedTensor):
                raise UnsupportedError(f"the cpu target keeps {v.name!r} quantized only as an edgec::Linear weight")
            const = cast(Tensor, v.const)  # not quantized (above)
            arr = np.ascontiguousarray(const.numpy()).reshape(np.shape(const.numpy()))  # 0-d stays 0-d
            c = self.relax.const(arr, str(arr.dtype))
            self.env[id(v)] = c
            return c
        raise KeyError(v.name)

    def const_ints(self, v: Value | None) -> list[int] | None:
        if v is None:
            return None
        if not v.is_const:
            raise UnsupportedError(f"{v.name!r} must be a constant for the cpu target (fold shapes first)")
        return [int(x) for x in np.asarray(cast("Tensor | QuantizedTensor", v.const).numpy()).reshape(-1)]

    def out_shape(self, n: Node, k: int = 0) -> list[int]:
        s = n.outputs[k].static_shape
        if s is None:
            raise UnsupportedError(f"node {n.name!r}: output shape is not static; give --input-shape")
        return list(s)

    def emit(self, expr: Any) -> Any:
        return self.bb.emit(expr)

    def fake_quant(self, x: Any, v: Value) -> Any:
        """Exactly QuantizeLinear + DequantizeLinear (x / scale, round half to even, saturate, rescale), as one
        TE kernel around ``nearbyint``. (A floor / compare / select form of round-half-even made kernels LLVM
        took minutes to compile on a BERT-sized model for Hexagon.)"""
        from tvm import te, tirx

        q = cast(ActivationQuant, v.quant)  # called for quantized activations only
        lo, hi = (-128.0, 127.0) if q.signed else (0.0, 255.0)
        s, z = tirx.const(q.scale, "float32"), tirx.const(float(q.zero_point), "float32")

        def f(a: Any) -> Any:
            def g(*i: Any) -> Any:
                r = tirx.nearbyint(a(*i) / s) + z
                r = tirx.max(tirx.min(r, tirx.const(hi, "float32")), tirx.const(lo, "float32"))
                return (r - z) * s

            return te.compute(a.shape, g, name="fake_quant")

        return self.bb.emit_te(f, x, primfunc_name_hint="fake_quant")

    def lower(self, n: Node) -> list[Any]:
        """The Relax values of ``n``'s outputs: its native lowering, else TVM's own ONNX converter for the op
        (``fallback_ops``); checked against the shapes and dtypes the IR declares."""
        empty = self._empty(n)
        if empty is not None:
            return empty
        fn = LOWERINGS.get(n.qualified_op)
        widen = (
            fn is not None
            and n.qualified_op in _WIDEN_F16
            and any(v is not None and v.dtype == DType.FLOAT16 for v in n.inputs)
        )
        saved: dict[int, object] = {}
        try:
            if widen:  # accumulate in float32, as onnxruntime does: float16 sums drift by several ulps
                for v in n.inputs:
                    if v is not None and v.dtype == DType.FLOAT16 and id(v) not in saved:
                        saved[id(v)] = self.env.get(id(v))
                        self.env[id(v)] = self.emit(_op().astype(self.get(v), "float32"))
            res = fn(self, n) if fn is not None else tvm_fallback(self, n)
        except UnsupportedError:
            raise
        except Exception as e:  # noqa: BLE001 - a TVM op rejecting a variant the lowering did not foresee
            raise UnsupportedError(
                f"node {n.name!r}: the cpu lowering of {n.qualified_op} does not support this "
                f"variant ({type(e).__name__}: {_first_line(e)})"
            ) from None
        finally:
            for key, old in saved.items():
                if old is None:
                    self.env.pop(key, None)
                else:
                    self.env[key] = old
        outs = list(res) if isinstance(res, (list, tuple)) else [res]
        if widen:
            outs = [
                self.emit(_op().astype(r, "float16"))
                if k < len(n.outputs) and n.outputs[k].dtype == DType.FLOAT16 and r.ty.dtype == "float32"
                else r
                for k, r in enumerate(outs)
            ]
        self._check_outputs(n, outs)
        return outs

    def _empty(self, n: Node) -> list[Any] | None:
        """Outputs with no elements are refused: TVM cannot schedule a zero-extent reduction, and the library's
        loader rejects the zero-element constant its constant folding makes of anything else."""
        for k, o in enumerate(n.outputs):
            if o.static_shape is not None and 0 in o.static_shape:
                raise UnsupportedError(
                    f"node {n.name!r}: output {k} of {n.qualified_op} ({o.name!r}) has no "
                    f"elements (shape {list(o.static_shape)}); the cpu target does not compile "
                    "empty tensors"
                )
        return None

    def _check_outputs(self, n: Node, outs: list[Any]) -> None:
        relax = self.relax
        graph_outputs = {id(o) for o in self.model.graph.outputs}
        for k, o in enumerate(n.outputs):
            if k >= len(outs):
                if o.uses or id(o) in graph_outputs:
                    raise UnsupportedError(
                        f"node {n.name!r}: the cpu target does not compute output {k} ({o.name!r}) of {n.qualified_op}"
                    )
                continue
            si = outs[k].ty
            if not isinstance(si, relax.TensorType):
                raise UnsupportedError(f"node {n.name!r}: output {k} of {n.qualified_op} is not a tensor here")
            want = o.static_shape
            if want is not None and si.shape is not None and isinstance(si.shape, relax.ShapeExpr):
                try:
                    got = [int(d) for d in si.shape.values]
                except TypeError:
                    got = None
                if got is not None and got != list(want):
                    raise UnsupportedError(
                        f"node {n.name!r}: the cpu lowering of {n.qualified_op} gives output {k} "
                        f"shape {got}, the model declares {list(want)}"
                    )
            if o.dtype is not None and o.dtype.numpy is not None and si.dtype != o.dtype.numpy.name:
                raise UnsupportedError(
                    f"node {n.name!r}: the cpu lowering of {n.qualified_op} gives output {k} "
                    f"dtype {si.dtype}, the model declares {o.dtype.numpy.name}"
                )

    def lower_special(self, n: Node) -> bool:
        """A subclass's hook: lower ``n`` itself (setting ``self.env`` for its outputs) and return True."""
        return False

    def build(self) -> Any:
        relax = self.relax
        g = self.model.graph
        params = []
        pending_inputs: list[Value] = []
        for v in g.inputs:
            shape = v.static_shape
            if shape is None:
                raise UnsupportedError(f"input {v.name!r} has a dynamic shape {v.shape}; fix it with --input-shape")
            var = relax.Var(safe_name(v.name), relax.TensorType(list(shape), cast(DType, v.dtype).numpy.name))
            params.append(var)
            self.env[id(v)] = var
            pending_inputs.append(v)
        problems = [
            f"node {n.name!r}: operator {n.qualified_op} (opset {self.model.opset}) has no cpu lowering"
            for n in g
            if n.qualified_op not in LOWERINGS and n.qualified_op not in self.fallback_ops
        ]
        if problems:
            raise UnsupportedError("the cpu target cannot lower this model", problems)
        with self.bb.function("main", params):
            with self.bb.dataflow():
                for v in pending_inputs:
                    if v.quant is not None:
                        self.env[id(v)] = self.fake_quant(self.env[id(v)], v)
                for n in g:
                    if self.lower_special(n):
                        continue
                    outs = self.lower(n)
                    for o, r in zip(n.outputs, outs):
                        self.env[id(o)] = self.fake_quant(r, o) if o.quant is not None else r
                results = [self.get(o) for o in g.outputs]
                out = self.bb.emit_output(results[0] if len(results) == 1 else relax.Tuple(results))
            self.bb.emit_func_output(out)
        return self.bb.get()


def _first_line(e: BaseException) -> str:
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()]
    text = lines[-1] if lines else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def safe_name(name: str) -> str:
    """``name`` as an identifier for generated code (Relax variables, kernel and C symbol names): every
    character other than a letter, a digit or ``_`` becomes ``_``; an empty name becomes ``v``."""
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "v"


# ------------------------------------------------------------------------------------------------ lowerings
def _op() -> Any:
    from tvm.relax import op

    return op


_BINARY = {
    "Add": "add",
    "Sub": "subtract",
    "Mul": "multiply",
    "Div": "divide",
    "Pow": "power",
    "Equal": "equal",
    "Less": "less",
    "Greater": "greater",
    "And": "logical_and",
}
_VARIADIC = {"Max": "maximum", "Min": "minimum"}
# (namespace of relax.op, function); Tanh and Reciprocal have lowerings of their own below
_UNARY: dict[str, tuple[str, str]] = {
    "Relu": ("nn", "relu"),
    "Sigmoid": ("", "sigmoid"),
    "Exp": ("", "exp"),
    "Sqrt": ("", "sqrt"),
    "Erf": ("", "erf"),
    "Neg": ("", "negative"),
    "Abs": ("", "abs"),
    "Log": ("", "log"),
    "Not": ("", "logical_not"),
}


@lowering(*_BINARY)
def _binary(b: RelaxBuilder, n: Node) -> Any:
    # Integer Div truncates toward zero (ONNX, C); relax.op.divide on integers is TIR's truncating division.
    x, y = (b.get(cast(Value, v)) for v in n.inputs)
    if (
        n.op_type == "Pow"
        and cast(Value, n.inputs[0]).dtype != cast(Value, n.inputs[1]).dtype
        or (n.op_type == "Pow" and not cast(DType, cast(Value, n.inputs[0]).dtype).is_float)
    ):
        return _pow(b, n, x, y)
    if (
        n.op_type == "Div"
        and cast(Value, n.inputs[0]).dtype is not None
        and not cast(DType, cast(Value, n.inputs[0]).dtype).is_float
    ):
        return _int_div(b, n, x, y)
    return b.emit(getattr(_op(), _BINARY[n.op_type])(x, y))


def _pow(b: RelaxBuilder, n: Node, x: Any, y: Any) -> Any:
    """Pow across types, exactly. A float base to an integer power: |x| ** float(e), negated where x < 0 and the
    integer e is odd (the parity of e itself, which a rounded float(e) can lose). An integer base: computed in
    float64 and truncated, as onnxruntime does (exact while the result stays below 2**53)."""
    op = _op()
    bt, et = cast(DType, cast(Value, n.inputs[0]).dtype).numpy, cast(DType, cast(Value, n.inputs[1]).dtype).numpy

    def c(v: Any, dt: Any) -> Any:
        return b.relax.const(np.asarray(v, dt), np.dtype(dt).name)

    if bt.kind == "f" and et.kind == "f":
        return b.emit(op.power(x, op.astype(y, bt.name)))
    if bt.kind == "f":
        mag = op.power(op.abs(x), op.astype(y, bt.name))
        odd = op.not_equal(op.bitwise_and(y, c(1, et)), c(0, et))
        return b.emit(op.where(op.logical_and(op.less(x, c(0, bt)), odd), op.negative(mag), mag))
    # an integer base: in float64 and truncated, as onnxruntime computes it (exact while |result| < 2**53)
    return b.emit(op.astype(op.power(op.astype(x, "float64"), op.astype(y, "float64")), bt.name))


@lowering("CumProd")
def _cumprod(b: RelaxBuilder, n: Node) -> Any:
    """TVM's sequential cumprod (the order onnxruntime multiplies in); reverse by flipping around it."""
    axis = b.const_ints(cast(Value, n.inputs[1]))
    if axis is None or len(axis) != 1:
        raise UnsupportedError(f"node {n.name!r}: CumProd needs a constant axis on the cpu target")
    op, ax = _op(), axis[0] % cast(int, cast(Value, n.inputs[0]).rank)
    x = b.get(cast(Value, n.inputs[0]))
    rev = bool(n.attr("reverse", 0))
    if rev:
        x = op.flip(x, axis=ax)
    y = op.cumprod(x, axis=ax, exclusive=bool(n.attr("exclusive", 0)))
    return b.emit(op.flip(y, axis=ax) if rev else y)


@lowering("Mod")
def _mod(b: RelaxBuilder, n: Node) -> Any:
    """Integer Mod without traps (x86's idiv raises SIGFPE on a zero divisor and on MIN % -1): those divisors
    become 1 (x mod +-1 is 0; a zero divisor, which onnx leaves undefined, gives 0 as numpy does). fmod=0 takes
    the divisor's sign (floor), fmod=1 the dividend's (C's %). Floats go through TVM's converter."""
    dt = cast(Value, n.inputs[0]).dtype
    if dt is None:
        return tvm_fallback(b, n)
    op, npdt = _op(), dt.numpy
    if dt.is_float:
        return _float_mod(b, n, npdt)
    x, y = (b.get(cast(Value, v)) for v in n.inputs)
    zero, one = b.relax.const(np.asarray(0, npdt), npdt.name), b.relax.const(np.asarray(1, npdt), npdt.name)
    bad = op.equal(y, zero)
    if npdt.kind == "i":
        bad = op.logical_or(bad, op.equal(y, b.relax.const(np.asarray(-1, npdt), npdt.name)))
    safe = op.where(bad, one, y)
    return b.emit(op.mod(x, safe) if n.attr("fmod", 0) else op.floor_mod(x, safe))


def _float_mod(b: RelaxBuilder, n: Node, dt: np.dtype) -> Any:
    """fmod=1: C's fmod (TIR's float truncmod is LLVM's frem, exact). fmod=0: the remainder with the divisor's
    sign, as numpy computes it: fmod, plus the divisor where the signs differ, a zero signed like the divisor
    (so -3 mod inf is inf, 1 mod -inf is -inf, 0 mod -2 is -0)."""
    op = _op()
    x, y = (b.get(cast(Value, v)) for v in n.inputs)
    r = op.mod(x, y)
    if n.attr("fmod", 0):
        return b.emit(r)
    zero = b.relax.const(np.asarray(0, dt), dt.name)
    neg_y = op.less(y, zero)
    fix = op.logical_and(op.not_equal(r, zero), op.logical_xor(op.less(r, zero), neg_y))
    r = op.where(fix, op.add(r, y), r)
    signed_zero = op.where(neg_y, b.relax.const(np.asarray(-0.0, dt), dt.name), zero)
    return b.emit(op.where(op.equal(r, zero), signed_zero, r))


def _int_div(b: RelaxBuilder, n: Node, x: Any, y: Any) -> Any:
    """Integer division that cannot trap: x86's idiv raises SIGFPE (killing the process that runs the artifact)
    on a zero divisor and on MIN / -1. A zero divisor gives 0 (onnx leaves it undefined; numpy gives 0), and a
    divisor of -1 gives -x, wrapping as two's complement does (-128 / -1 is -128 in int8, as onnxruntime's
    promoted arithmetic gives)."""
    op, dt = _op(), cast(DType, cast(Value, n.inputs[0]).dtype).numpy
    zero, one = b.relax.const(np.asarray(0, dt), dt.name), b.relax.const(np.asarray(1, dt), dt.name)
    bad = op.equal(y, zero)
    if dt.kind == "i":
        minus = b.relax.const(np.asarray(-1, dt), dt.name)
        bad = op.logical_or(bad, op.equal(y, minus))
    q = op.divide(x, op.where(bad, one, y))
    if dt.kind == "i":  # y == -1 divided by 1 above: negate (0 - x wraps); y == 0 gives 0
        q = op.where(op.equal(y, minus), op.subtract(zero, x), q)
    return b.emit(op.where(op.equal(y, zero), zero, q))


@lowering(*_VARIADIC)
def _variadic(b: RelaxBuilder, n: Node) -> Any:
    xs = [b.get(v) for v in n.inputs if v is not None]
    if not xs:
        raise UnsupportedError(f"node {n.name!r}: {n.op_type} needs at least one input")
    y = xs[0]
    for x in xs[1:]:
        y = getattr(_op(), _VARIADIC[n.op_type])(y, x)
    if len(xs) == 1:
        return b.emit(_op().broadcast_to(y, b.out_shape(n)))
    return b.emit(y)


@lowering(*_UNARY)
def _unary(b: RelaxBuilder, n: Node) -> Any:
    ns, fn = _UNARY[n.op_type]
    mod = _op().nn if ns == "nn" else _op()
    return b.emit(getattr(mod, fn)(b.get(cast(Value, n.inputs[0]))))


@lowering("Tanh")
def _tanh(b: RelaxBuilder, n: Node) -> Any:
    """TVM lowers tanh as (1 - e^-2x) / (1 + e^-2x), which cancels near 0 (1.3% off at x = 1e-6): there the odd
    series x - x^3/3 + 2x^5/15 is used instead (its first dropped term is 17x^7/315: below 3e-16 relative for
    |x| < 0.004, where the quotient's error is already below 2e-5 relative)."""
    op, x = _op(), b.get(cast(Value, n.inputs[0]))
    dt = cast(DType, cast(Value, n.inputs[0]).dtype).numpy.name

    def c(v: Any) -> Any:
        return b.relax.const(v, dt)

    x2 = op.multiply(x, x)
    series = op.multiply(x, op.add(c(1.0), op.multiply(x2, op.add(c(-1.0 / 3), op.multiply(x2, c(2.0 / 15))))))
    return b.emit(op.where(op.less(op.abs(x), c(0.004)), series, op.tanh(x)))


@lowering("Reciprocal")
def _reciprocal(b: RelaxBuilder, n: Node) -> Any:
    x = b.get(cast(Value, n.inputs[0]))
    return b.emit(_op().divide(b.relax.const(1.0, cast(DType, cast(Value, n.inputs[0]).dtype).numpy.name), x))


def _np_dtype(n: Node, v: Value) -> str:
    if v.dtype is None or v.dtype.numpy is None or v.dtype.numpy.kind not in "biuf":
        raise UnsupportedError(
            f"node {n.name!r}: {n.op_type} with dtype {v.dtype.short if v.dtype else '?'} "
            f"(value {v.name!r}) is not supported by the cpu target"
        )
    name: str = v.dtype.numpy.name
    return name


@lowering("Cast")
def _cast(b: RelaxBuilder, n: Node) -> Any:
    _np_dtype(n, cast(Value, n.inputs[0]))
    return b.emit(_op().astype(b.get(cast(Value, n.inputs[0])), _np_dtype(n, n.output)))


@lowering("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(b: RelaxBuilder, n: Node) -> Any:
    if n.op_type == "Reshape" and n.attr("allowzero", 0) and 0 in (b.const_ints(cast(Value, n.inputs[1])) or []):
        raise UnsupportedError(
            f"node {n.name!r}: Reshape with allowzero=1 and a 0 in the shape is not supported by the cpu target"
        )
    return b.emit(_op().reshape(b.get(cast(Value, n.inputs[0])), b.out_shape(n)))


@lowering("Expand")
def _expand(b: RelaxBuilder, n: Node) -> Any:
    return b.emit(_op().broadcast_to(b.get(cast(Value, n.inputs[0])), b.out_shape(n)))


@lowering("Transpose")
def _transpose(b: RelaxBuilder, n: Node) -> Any:
    return b.emit(_op().permute_dims(b.get(cast(Value, n.inputs[0])), n.attr("perm")))


@lowering("Concat")
def _concat(b: RelaxBuilder, n: Node) -> Any:
    return b.emit(_op().concat([b.get(cast(Value, v)) for v in n.inputs], axis=n.attr("axis")))


@lowering("Slice")
def _slice(b: RelaxBuilder, n: Node) -> Any:
    starts = cast("list[int]", b.const_ints(cast(Value, n.inputs[1])))  # required inputs: lists
    ends = cast("list[int]", b.const_ints(cast(Value, n.inputs[2])))
    axes = (
        cast("list[int]", b.const_ints(n.inputs[3]))
        if len(n.inputs) > 3 and n.inputs[3] is not None
        else list(range(len(starts)))
    )
    steps = (
        cast("list[int]", b.const_ints(n.inputs[4]))
        if len(n.inputs) > 4 and n.inputs[4] is not None
        else [1] * len(starts)
    )
    shape = cast("tuple[int, ...]", cast(Value, n.inputs[0]).static_shape)
    axes = [a % len(shape) for a in axes]
    ends = [min(e, shape[a]) if e >= 0 else e for e, a in zip(ends, axes)]
    return b.emit(_op().strided_slice(b.get(cast(Value, n.inputs[0])), axes, starts, ends, steps))


@lowering("Gather")
def _gather(b: RelaxBuilder, n: Node) -> Any:
    if isinstance(cast(Value, n.inputs[0]).const, QuantizedTensor):
        return _quantized_gather(b, n, cast(QuantizedTensor, cast(Value, n.inputs[0]).const))
    # Negative indices count from the end; clip mode: an out-of-range token id must not read out of bounds
    # (TVM's fast mode can segfault).
    axis = n.attr("axis", 0) % cast(Value, n.inputs[0]).rank
    idx = _wrap_negative(
        b, n, cast(Value, n.inputs[1]), [cast("tuple[int, ...]", cast(Value, n.inputs[0]).static_shape)[axis]]
    )
    return b.emit(_op().take(b.get(cast(Value, n.inputs[0])), idx, axis=axis, mode="clip"))


def _wrap_negative(b: RelaxBuilder, n: Node, idx: Value, dims: list[int]) -> Any:
    """Indices with ``dims`` (broadcast along the last axis) added to the negative ones, clamped into range
    (an out-of-range index must not read out of bounds)."""
    x = b.get(idx)
    if any(d is None for d in dims):
        raise UnsupportedError(f"node {n.name!r}: {n.op_type} needs a static data shape on the cpu target")
    dt = _np_dtype(n, idx)
    if idx.is_const:
        arr = np.asarray(idx.numpy()).astype(np.int64)
        d = np.asarray(dims if len(dims) > 1 else dims[0], np.int64)  # a 0-d index stays 0-d
        arr = np.clip(np.where(arr < 0, arr + d, arr), 0, np.maximum(d - 1, 0)).astype(dt)
        return b.relax.const(arr, dt)
    d = b.relax.const(np.asarray(dims if len(dims) > 1 else dims[0], dt), dt)
    zero = b.relax.const(np.asarray(0, dt), dt)
    y = _op().where(_op().less(x, zero), _op().add(x, d), x)
    hi = _op().subtract(d, b.relax.const(np.asarray(1, dt), dt))
    return b.emit(_op().minimum(_op().maximum(y, zero), hi))


@lowering("GatherElements")
def _gather_elements(b: RelaxBuilder, n: Node) -> Any:
    axis = n.attr("axis", 0) % cast(Value, n.inputs[0]).rank
    idx = _wrap_negative(
        b, n, cast(Value, n.inputs[1]), [cast("tuple[int, ...]", cast(Value, n.inputs[0]).static_shape)[axis]]
    )
    return b.emit(_op().gather_elements(b.get(cast(Value, n.inputs[0])), idx, axis=axis))


@lowering("GatherND")
def _gather_nd(b: RelaxBuilder, n: Node) -> Any:
    bd = n.attr("batch_dims", 0)
    k = cast("tuple[int, ...]", cast(Value, n.inputs[1]).static_shape)[-1]
    idx = _wrap_negative(
        b,
        n,
        cast(Value, n.inputs[1]),
        list(cast("tuple[int, ...]", cast(Value, n.inputs[0]).static_shape)[bd : bd + k]),
    )
    return b.emit(_op().gather_nd(b.get(cast(Value, n.inputs[0])), idx, batch_dims=bd))


@lowering("Where")
def _where(b: RelaxBuilder, n: Node) -> Any:
    return b.emit(_op().where(*(b.get(cast(Value, v)) for v in n.inputs)))


@lowering("Clip")
def _clip(b: RelaxBuilder, n: Node) -> Any:
    """min(max(x, lo), hi), as ONNX defines it (lo > hi gives hi); bounds may be run-time tensors."""
    y = b.get(cast(Value, n.inputs[0]))
    lo = cast(Value, n.inputs[1]) if len(n.inputs) > 1 else None
    hi = cast(Value, n.inputs[2]) if len(n.inputs) > 2 else None
    if lo is not None:
        y = _op().maximum(y, b.get(lo))
    if hi is not None:
        y = _op().minimum(y, b.get(hi))
    return b.emit(y) if (lo is not None or hi is not None) else y


@lowering("HardSigmoid")
def _hardsigmoid(b: RelaxBuilder, n: Node) -> Any:
    x = b.get(cast(Value, n.inputs[0]))
    dt = cast(DType, cast(Value, n.inputs[0]).dtype).numpy.name
    y = _op().add(_op().multiply(x, b.relax.const(n.attr("alpha", 0.2), dt)), b.relax.const(n.attr("beta", 0.5), dt))
    return b.emit(_clamp(b, y, 0.0, 1.0, dt))


def _clamp(b: RelaxBuilder, y: Any, lo: float, hi: float, dt: str) -> Any:
    """max(min(y, hi), lo), as relax's clip computes it, written with binary ops: ConvertLayout carries those
    through an NHWC region (it leaves clip in NCHW, between two transposes)."""
    return _op().maximum(_op().minimum(y, b.relax.const(hi, dt)), b.relax.const(lo, dt))


@lowering("HardSwish")
def _hardswish(b: RelaxBuilder, n: Node) -> Any:
    x = b.get(cast(Value, n.inputs[0]))
    dt = cast(DType, cast(Value, n.inputs[0]).dtype).numpy.name
    y = _clamp(b, _op().add(x, b.relax.const(3.0, dt)), 0.0, 6.0, dt)
    return b.emit(_op().multiply(x, _op().divide(y, b.relax.const(6.0, dt))))


@lowering("Softmax")
def _softmax(b: RelaxBuilder, n: Node) -> Any:
    axis = n.attr("axis", -1)
    x = cast(Value, n.inputs[0])
    if x.dtype == DType.FLOAT16:
        # float16 rounded where onnx's definition rounds: exp(x - max) to float16, its sum accumulated in float32
        # and rounded, the quotient rounded (one float32 softmax rounded once differed by 2 ulps)
        op = _op()
        xv = b.get(x)
        d = op.subtract(xv, op.max(xv, axis=axis, keepdims=True))
        e = b.emit(op.astype(op.exp(op.astype(d, "float32")), "float16"))
        total = op.astype(op.sum(op.astype(e, "float32"), axis=axis, keepdims=True), "float16")
        return b.emit(op.divide(e, total))
    return b.emit(_op().nn.softmax(b.get(x), axis=axis))


_REDUCE = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod"}


@lowering(*_REDUCE)
def _reduce(b: RelaxBuilder, n: Node) -> Any:
    """Axes from the input (opset 13 ReduceSum, 18 others) or the attribute; none given (or an empty list)
    means every axis unless noop_with_empty_axes=1 (the identity). Reducing an empty set gives the identity
    element (0, 1, +-inf / the integer extreme; mean: NaN)."""
    x = cast(Value, n.inputs[0])
    axes = b.const_ints(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] is not None else n.attr("axes")
    if not axes:
        if n.attr("noop_with_empty_axes", 0):
            return b.get(x)
        axes = list(range(cast(int, x.rank)))
    axes = sorted({a % x.rank for a in axes}) if x.rank else []
    dt = _np_dtype(n, x)
    shape = x.static_shape
    if shape is not None and any(shape[a] == 0 for a in axes):
        return b.relax.const(np.full(b.out_shape(n), _empty_reduction(n, np.dtype(dt)), dt), dt)
    fn = _REDUCE[n.op_type]
    keep = bool(n.attr("keepdims", 1))
    if not axes:  # a 0-d input
        return b.get(x)
    if dt == "bool":
        if fn not in ("max", "min"):
            raise UnsupportedError(f"node {n.name!r}: {n.op_type} of booleans is not supported by the cpu target")
        y = getattr(_op(), fn)(_op().astype(b.get(x), "int8"), axis=axes, keepdims=keep)
        return b.emit(_op().astype(y, "bool"))
    if fn in ("max", "min") and np.dtype(dt).kind == "f":
        return _float_extreme(b, b.get(x), cast(int, x.rank), axes, keep, fn)
    return b.emit(getattr(_op(), fn)(b.get(x), axis=axes, keepdims=keep))


def _float_extreme(b: RelaxBuilder, x: Any, rank: int, axes: list[int], keep: bool, fn: str) -> Any:
    """Float max / min starting from -inf / +inf: TVM's own start from the largest finite value, so a row of
    -inf (a fully masked attention row) reduced to -3.4e38 instead of -inf."""
    from tvm import te, tirx

    def compute(X: Any) -> Any:
        ident = -np.inf if fn == "max" else np.inf
        reducer = te.comm_reducer(
            lambda u, v: tirx.max(u, v) if fn == "max" else tirx.min(u, v),
            lambda t: tirx.const(ident, t),
            name=f"reduce_{fn}_inf",
        )
        raxes = [te.reduce_axis((0, X.shape[a]), f"r{a}") for a in axes]
        kept = [a for a in range(rank) if a not in axes]
        out_shape = [1 if a in axes else X.shape[a] for a in range(rank)] if keep else [X.shape[a] for a in kept]

        def body(*idx: Any) -> Any:
            full, r = [], iter(raxes)
            for a in range(rank):
                if a in axes:
                    full.append(next(r))
                else:
                    full.append(idx[a] if keep else idx[kept.index(a)])
            return reducer(X[tuple(full)], axis=raxes)

        return te.compute(out_shape, body, name=f"reduce_{fn}")

    return b.bb.emit_te(compute, x, primfunc_name_hint=f"reduce_{fn}")


def _empty_reduction(n: Node, dt: np.dtype) -> Any:
    op = n.op_type
    if op == "ReduceSum":
        return 0
    if op == "ReduceProd":
        return 1
    if op == "ReduceMean":
        if dt.kind != "f":
            raise UnsupportedError(f"node {n.name!r}: the integer mean of an empty set is undefined")
        return np.nan
    big = op == "ReduceMin"
    if dt.kind == "f":
        return np.inf if big else -np.inf
    if dt.kind == "b":
        return big
    info = np.iinfo(dt)
    return info.max if big else info.min


@lowering("MatMul")
def _matmul(b: RelaxBuilder, n: Node) -> Any:
    return b.emit(_op().matmul(b.get(cast(Value, n.inputs[0])), b.get(cast(Value, n.inputs[1]))))


def _pads(n: Node, spatial: int) -> list[int]:
    if n.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedError(
            f"node {n.name!r}: auto_pad={n.attr('auto_pad')} is not supported; re-export with explicit pads"
        )
    return list(n.attr("pads", [0] * 2 * spatial))


@lowering("Conv")
def _conv(b: RelaxBuilder, n: Node) -> Any:
    w = cast(Value, n.inputs[1])
    if w.rank != 4:
        raise UnsupportedError(f"node {n.name!r}: only 2-D convolution is supported by the cpu target")
    if isinstance(w.const, QuantizedTensor):
        y = _quantized_conv(b, n, w.const)
    else:
        y = _op().nn.conv2d(
            b.get(cast(Value, n.inputs[0])),
            b.get(w),
            strides=n.attr("strides", [1, 1]),
            padding=_pads(n, 2),
            dilation=n.attr("dilations", [1, 1]),
            groups=n.attr("group", 1),
        )
    if len(n.inputs) > 2 and n.inputs[2] is not None:
        y = _op().add(y, _op().reshape(b.get(n.inputs[2]), [1, -1, 1, 1]))
    return b.emit(y)


@lowering("MaxPool", "AveragePool")
def _pool(b: RelaxBuilder, n: Node) -> Any:
    sp = cast(int, cast(Value, n.inputs[0]).rank) - 2
    if sp not in (1, 2, 3):
        raise UnsupportedError(
            f"node {n.name!r}: {n.op_type} over {sp} spatial axes is not supported by the cpu target"
        )
    if n.op_type == "MaxPool" and n.attr("storage_order", 0):
        raise UnsupportedError(f"node {n.name!r}: MaxPool storage_order=1 is not supported by the cpu target")
    kind = "max" if n.op_type == "MaxPool" else "avg"
    fn = getattr(_op().nn, f"{kind}_pool{sp}d")
    kw = {"count_include_pad": bool(n.attr("count_include_pad", 0))} if kind == "avg" else {}
    return b.emit(
        fn(
            b.get(cast(Value, n.inputs[0])),
            pool_size=n.attr("kernel_shape"),
            strides=n.attr("strides", [1] * sp),
            padding=_pads(n, sp),
            dilation=n.attr("dilations", [1] * sp),
            ceil_mode=bool(n.attr("ceil_mode", 0)),
            **kw,
        )
    )


@lowering("GlobalAveragePool")
def _gap(b: RelaxBuilder, n: Node) -> Any:
    return b.emit(_op().mean(b.get(cast(Value, n.inputs[0])), axis=[2, 3], keepdims=True))


@lowering("BatchNormalization")
def _bn(b: RelaxBuilder, n: Node) -> Any:
    x, g, beta, mean, var = cast("tuple[Value, Value, Value, Value, Value]", n.inputs[:5])
    eps = n.attr("epsilon", 1e-5)
    if n.attr("training_mode", 0) or any(
        o.uses or id(o) in {id(v) for v in b.model.graph.outputs} for o in n.outputs[1:]
    ):
        raise UnsupportedError(
            f"node {n.name!r}: BatchNormalization in training mode (batch statistics, running "
            "mean / variance outputs) is not supported by the cpu target"
        )
    shape = [1, -1] + [1] * (cast(int, x.rank) - 2)
    dt = _np_dtype(n, x)
    if not all(v.is_const for v in (g, beta, mean, var)):

        def r(v: Any) -> Any:
            return _op().reshape(b.get(v), shape)

        inv = _op().divide(r(g), _op().sqrt(_op().add(r(var), b.relax.const(np.asarray(eps, dt), dt))))
        return b.emit(_op().add(_op().multiply(_op().subtract(b.get(x), r(mean)), inv), r(beta)))
    k = g.numpy() / np.sqrt(var.numpy() + eps)
    shift = beta.numpy() - mean.numpy() * k
    y = _op().add(
        _op().multiply(b.get(x), b.relax.const(k.reshape(shape).astype(dt))),
        b.relax.const(shift.reshape(shape).astype(dt)),
    )
    return b.emit(y)


@lowering("LayerNormalization")
def _layernorm(b: RelaxBuilder, n: Node) -> Any:
    x = cast(Value, n.inputs[0])
    axis = n.attr("axis", -1) % x.rank
    axes = list(range(axis, cast(int, x.rank)))
    dt = _np_dtype(n, x)
    eps = n.attr("epsilon", 1e-5)
    beta = (
        b.get(n.inputs[2])
        if len(n.inputs) > 2 and n.inputs[2] is not None
        else b.relax.const(np.zeros(cast("tuple[int, ...]", x.static_shape)[axis:], dt))
    )
    y = b.emit(_op().nn.layer_norm(b.get(x), b.get(cast(Value, n.inputs[1])), beta, axes=axes, epsilon=eps))
    if len(n.outputs) == 1:
        return y
    # Mean and InvStdDev (the reduced axes kept as 1), computed in float32 (stash_type=1)
    if n.attr("stash_type", 1) != 1:
        raise UnsupportedError(
            f"node {n.name!r}: LayerNormalization stash_type={n.attr('stash_type')} is not supported by the cpu target"
        )
    xf = _op().astype(b.get(x), "float32")
    mean = b.emit(_op().mean(xf, axis=axes, keepdims=True))
    d = _op().subtract(xf, mean)
    var = _op().mean(_op().multiply(d, d), axis=axes, keepdims=True)
    inv = _op().rsqrt(_op().add(var, b.relax.const(np.asarray(eps, "float32"), "float32")))
    outs = [y, mean, b.emit(inv)]
    return [
        o
        if k == 0 or n.outputs[k].dtype is None or cast(DType, n.outputs[k].dtype).numpy.name == "float32"
        else b.emit(_op().astype(o, cast(DType, n.outputs[k].dtype).numpy.name))
        for k, o in enumerate(outs)
    ][: len(n.outputs)]


@lowering("edgec::RMSNorm")
def _rmsnorm(b: RelaxBuilder, n: Node) -> Any:
    return b.emit(
        _op().nn.rms_norm(
            b.get(cast(Value, n.inputs[0])), b.get(cast(Value, n.inputs[1])), axes=[-1], epsilon=n.attr("epsilon", 1e-5)
        )
    )


@lowering("edgec::Gelu")
def _gelu(b: RelaxBuilder, n: Node) -> Any:
    fn = _op().nn.gelu_tanh if n.attr("approximate", "none") == "tanh" else _op().nn.gelu
    return b.emit(fn(b.get(cast(Value, n.inputs[0]))))


@lowering("edgec::Attention")
def _attention(b: RelaxBuilder, n: Node) -> Any:
    q, k, v = (b.get(cast(Value, x)) for x in n.inputs[:3])
    r = cast(int, cast(Value, n.inputs[1]).rank)
    perm = list(range(r))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    s = _op().matmul(q, _op().permute_dims(k, perm))
    s = _op().multiply(s, b.relax.const(n.attr("scale", 1.0), cast(DType, cast(Value, n.inputs[0]).dtype).numpy.name))
    if len(n.inputs) > 3 and n.inputs[3] is not None:
        s = _op().add(s, b.get(n.inputs[3]))
    p = b.emit(_op().nn.softmax(s, axis=-1))
    return b.emit(_op().matmul(p, v))


@lowering("edgec::Linear")
def _linear(b: RelaxBuilder, n: Node) -> Any:
    x, w = cast(Value, n.inputs[0]), cast(Value, n.inputs[1])
    bias = cast(Value, n.inputs[2]) if len(n.inputs) > 2 else None
    if isinstance(w.const, QuantizedTensor):
        return _quantized_linear(b, n, x, w.const, bias)
    y = _op().matmul(b.get(x), _op().permute_dims(b.get(w), [1, 0]))
    if bias is not None:
        y = _op().add(y, b.get(bias))
    return b.emit(y)


def codes_per_byte(q: QuantizedTensor) -> int:
    """How many codes :func:`pack_codes` stores per byte: 2 for 4 bits and below with an even row length, else 1."""
    codes = np.asarray(q.codes)
    k = int(np.prod(codes.shape[1:])) if codes.ndim > 1 else codes.size
    return 2 if q.bits <= 4 and k % 2 == 0 else 1


def pack_codes(q: QuantizedTensor) -> tuple[np.ndarray, int]:
    """Codes as stored in the artifact, flattened to ``[out, K]``: int8/uint8 per code for 5-8 bits, two
    codes per byte for 4 bits and below (sub-4-bit codes use 4-bit slots).

    Returns (packed array, codes per byte).
    """
    codes = np.asarray(q.codes)
    codes = codes.reshape(codes.shape[0], -1) if codes.ndim > 1 else codes.reshape(1, -1)
    if codes_per_byte(q) == 1:
        return codes.astype(np.int8 if q.signed else np.uint8), 1
    nib = (codes.astype(np.int16) & 0xF).astype(np.uint8)
    return np.ascontiguousarray(nib[:, 0::2] | (nib[:, 1::2] << 4)), 2


def _quantized_linear(b: RelaxBuilder, n: Node, x: Value, q: QuantizedTensor, bias: Value | None) -> Any:
    from tvm import te

    if (
        q.scheme not in LINEAR_WEIGHTS
        or q.codes.ndim != 2
        or q.axis not in (0, None)
        or (q.group_size and q.group_axis != 1)
    ):
        raise UnsupportedError(
            f"node {n.name!r}: the cpu target encodes per-channel or group-wise (along the input "
            f"axis) affine weights and vector codebooks; {q!r} is not one of them"
        )
    N, K = q.shape
    xs = cast("tuple[int, ...]", x.static_shape)  # shapes are static here
    M = int(np.prod(xs[:-1]))
    consts, element = LINEAR_WEIGHTS[q.scheme](q, b)

    def compute(X: Any, *params: Any) -> Any:
        k = te.reduce_axis((0, K), "k")
        return te.compute((M, N), lambda i, j: te.sum(X[i, k] * element(params, j, k), axis=k), name="dequant_matmul")

    x2 = b.emit(_op().reshape(b.get(x), [M, K]))
    y = b.bb.emit_te(compute, x2, *consts, primfunc_name_hint=f"qlinear_{q.bits}b")
    if bias is not None:
        y = b.emit(_op().add(y, b.get(bias)))
    return b.emit(_op().reshape(y, list(xs[:-1]) + [N]))


def vector_arrays(q: QuantizedTensor) -> tuple[np.ndarray, np.ndarray]:
    """What the library stores for a vector-quantized weight: indices ``[O, K / d]`` (uint8, or uint16 above 8
    bits) and the codebooks flattened to ``[R * G * n, d]`` float32."""
    codes = np.ascontiguousarray(np.asarray(q.codes).astype(np.uint8 if q.bits <= 8 else np.uint16))
    book = np.ascontiguousarray(np.asarray(q.codebook, np.float32).reshape(-1, q.vector_dim))
    return codes, book


# How a quantized Linear weight's elements are computed inside the matmul, by scheme: the schemes the library
# carries for Linear (conv weights and embedding tables: the uniform grids only).
LINEAR_WEIGHTS = Encoders()


@LINEAR_WEIGHTS.register("vector")
def _vector_te(q: QuantizedTensor, b: RelaxBuilder) -> Any:
    """A vector-quantized weight as Relax constants (indices ``[O, K / d]`` u8 / u16, codebooks flattened to
    ``[R * G * n, d]`` float32) and a TE function gathering one element from the codebook inside the matmul:
    ``w[row, k] = CB[((row // (O / R)) * G + k // group) * n + codes[row, k // d], k % d]``, the exact entry."""
    r, g, n, d = cast(np.ndarray, q.codebook).shape
    gs, rp = q.group_size, q.shape[0] // r
    codes, book = vector_arrays(q)
    consts = [b.relax.const(codes, str(codes.dtype)), b.relax.const(book, "float32")]

    def element(params: Any, row: Any, kk: Any) -> Any:
        c = params[0][row, kk // d].astype("int32")
        block = (row // rp) * g if r > 1 else 0
        return params[1][(block + kk // gs) * n + c, kk % d]

    return consts, element


@LINEAR_WEIGHTS.register("symmetric", "asymmetric", "affine")
def _linear_affine_te(q: QuantizedTensor, b: RelaxBuilder) -> Any:
    """A Linear's affine codes stored input-major (:func:`_dequant_te` with ``columns``): a vector of output columns
    is one contiguous load per K step, so a register tile reads each packed byte once. (The cpu target runs inputs of
    1..4 rows with its own kernel instead, targets/cpu/gemv.py.)"""
    return _dequant_te(q, b, columns=True)


def _dequant_te(q: QuantizedTensor, b: RelaxBuilder, columns: bool = False) -> Any:
    """Relax constants for a quantized weight plus a TE function reading one dequantized element.

    Codes are flattened to ``[out, K]`` and packed as in :func:`pack_codes`; scales, zero points and
    offsets index by (row, K position // group). With ``columns`` every constant is stored transposed
    (``[K / 2, out]`` packed codes, ``[groups, out]`` scales), and signed int4 codes with their sign bit flipped
    (nibble + 8, decoded as nibble - 8: the same value, no sign extension). ``element(params, row, k)`` takes the
    TE tensors of the constants in order, and computes exactly :meth:`QuantizedTensor.dequantize` (float32, same
    order)."""
    from tvm import tirx

    k = int(np.prod(q.shape[1:]))
    packed, per_byte = pack_codes(q)
    scales = np.asarray(q.scales, np.float32).reshape(cast(np.ndarray, q.scales).shape[0], -1)
    sn, gk = scales.shape[0], max(1, k // scales.shape[1])
    extra = {
        name: np.ascontiguousarray(np.asarray(p, np.float32).reshape(sn, -1))
        for name, p in (("zp", q.zero_points), ("offset", q.offsets))
        if p is not None
    }
    flipped = columns and per_byte == 2 and q.signed
    if columns:
        if flipped:
            packed = packed ^ np.uint8(0x88)  # two's complement nibbles -> nibble + 8
        packed, scales = packed.T, scales.T
        extra = {name: a.T for name, a in extra.items()}
    consts = [
        b.relax.const(np.ascontiguousarray(packed), str(packed.dtype)),
        b.relax.const(np.ascontiguousarray(scales), "float32"),
    ]
    consts += [b.relax.const(np.ascontiguousarray(a), "float32") for a in extra.values()]
    slots = {name: 2 + i for i, name in enumerate(extra)}

    def at(t: Any, r: Any, c: Any) -> Any:  # t[r, c] of a [rows, K-wise] constant, stored transposed if columns
        return t[c, r] if columns else t[r, c]

    def element(params: Any, row: Any, kk: Any) -> Any:
        P, S = params[0], params[1]
        if per_byte == 1:
            c = at(P, row, kk).astype("float32")
        else:
            byte = at(P, row, kk // 2).astype("int32")
            # low nibble for even K positions, high for odd (int32 throughout: a shift by an int64 amount widens
            # the whole decode to 64-bit lanes)
            nib = tirx.Select(kk % 2 == 0, tirx.bitwise_and(byte, 15), tirx.shift_right(byte, 4))
            if flipped:
                c = nib.astype("float32") - tirx.const(8.0, "float32")
            else:
                if q.signed:
                    nib = tirx.Select(nib >= 8, nib - 16, nib)
                c = nib.astype("float32")
        r = row if sn > 1 else 0
        if "zp" in slots:
            c = c - at(params[slots["zp"]], r, kk // gk)
        c = c * at(S, r, kk // gk)
        if "offset" in slots:
            c = c + at(params[slots["offset"]], r, kk // gk)
        return c

    return consts, element


def _quantized_conv(b: RelaxBuilder, n: Node, q: QuantizedTensor) -> Any:
    from tvm import te, topi

    if q.scheme_type.indexes_codebook:
        raise UnsupportedError(f"node {n.name!r}: the cpu target does not encode {q.scheme} conv weights")
    o, i, kh, kw = q.shape
    consts, element = _dequant_te(q, b)
    strides, dil, groups = n.attr("strides", [1, 1]), n.attr("dilations", [1, 1]), n.attr("group", 1)
    pads = _pads(n, 2)

    def compute(X: Any, *params: Any) -> Any:
        W = te.compute((o, i, kh, kw), lambda a, c, y, x: element(params, a, (c * kh + y) * kw + x), name="w_deq")
        if groups == 1:
            return topi.nn.conv2d_nchw(X, W, strides, pads, dil, out_dtype="float32")
        return topi.nn.group_conv2d_nchw(X, W, strides, pads, dil, groups, out_dtype="float32")

    return b.bb.emit_te(compute, b.get(cast(Value, n.inputs[0])), *consts, primfunc_name_hint=f"qconv_{q.bits}b")


def _quantized_gather(b: RelaxBuilder, n: Node, q: QuantizedTensor) -> Any:
    from tvm import te

    if q.scheme_type.indexes_codebook or q.codes.ndim != 2 or n.attr("axis", 0) != 0:
        raise UnsupportedError(f"node {n.name!r}: the cpu target encodes affine 2-D embedding tables only")
    rows, dim = q.shape
    consts, element = _dequant_te(q, b)
    idx = cast(Value, n.inputs[1])
    ishape = cast("tuple[int, ...]", idx.static_shape)

    def compute(I: Any, *params: Any) -> Any:
        def f(*ax: Any) -> Any:
            r = I[ax[:-1]].astype("int32")
            r = te.max(te.min(r, rows - 1), 0)  # clip, like the float lowering's mode="clip"
            return element(params, r, ax[-1])

        return te.compute(tuple(ishape) + (dim,), f, name="dequant_gather")

    return b.bb.emit_te(compute, b.get(idx), *consts, primfunc_name_hint=f"qgather_{q.bits}b")
