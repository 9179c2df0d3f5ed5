"""Statically quantized int8 Conv / depthwise Conv / Linear as integer kernels on the host CPU, bit-exact with
:mod:`edgec.ir.integer` (the arithmetic the Hexagon int8 kernels run too).

``IntBuilder`` is the Relax builder of :mod:`edgec.api.relax` plus one hook: each :class:`IntOp` (a Conv or
Linear whose input is an int8 activation and whose weight is per-channel int8) becomes

* the activation's **codes** as unsigned bytes, channels innermost (``[H, W, C]`` for an image, ``[1, M, K]``
  for a Linear's rows), channels padded to a multiple of 4: a *quantize* kernel from the float value (fused by
  TVM with the float ops before it), unless the producer's requantizing epilogue wrote them; a *pad* kernel
  adds the margins a convolution reads (the input's zero point, so padding contributes nothing);
* one **integer kernel**: ``sum(u * w)`` in int32 over a register tile of R output pixels x NB blocks of 16
  output channels, with AVX-512 VNNI's ``vpdpbusd`` (64 unsigned x signed byte products into 16 int32 lanes per
  instruction) where the CPU has it, plain int32 vector arithmetic otherwise (the same integers either way);
  weights packed at compile time as ``[O/16, KH, KW, C/4, 16, 4]`` so each step loads one 64-byte vector;
* its **epilogue** on the tile: the zero-point correction ``- zx * sum(w)`` (and the bias in accumulator units)
  folded into one int32 per channel, then either the fixed-point requantization into the next layer's codes
  (``IntOp.fused``: int64 multiply, shifts, clamp) or the int32 accumulator, which Relax ops turn into float
  (``float32(t) * S + b``, two roundings) in the kernel module compiled without FMA contraction (see
  :class:`.schedule.SplitGemm`; the integer kernels, free of float arithmetic, go to the full-ISA library).

Depthwise convolutions accumulate in int32 lanes over the channels (no reduction over channels to give
``vpdpbusd``). Everything else in the model (residual adds, softmax, norms) stays float, as the reference has it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ...api.relax import safe_name
from ...errors import UnsupportedError
from ...ir import Node
from ...ir.integer import IntOp, chained
from .gemv import CpuBuilder
from .schedule import INTEGER_KERNEL

# float ops computed in NHWC between integer kernels (IntBuilder._lower_nhwc)
_NHWC_OPS = frozenset({"Add", "Sub", "Mul", "Relu", "Clip", "MaxPool"})
LANES = 16  # int32 lanes of one AVX-512 vector: the output channels one vpdpbusd accumulates
_VNNI = "edgec_dot_16x4_vnni"


def _register_vnni() -> None:
    """``C[16] += sum_j A[j] * B[i, j]`` (u8 x s8 -> i32) as one ``vpdpbusd``. TVM ships this intrinsic
    (tvm.s_tir.tensor_intrin.x86), but with LLVM's old signature of ``llvm.x86.avx512.vpdpbusd.512`` (i32 vectors),
    which the LLVM it is built with rejects, and importing it parses every target's intrinsics (24 s); this is the
    same description with the byte-vector operands."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    try:
        TensorIntrin.get(_VNNI)
        return
    except (ValueError, RuntimeError, KeyError):
        pass

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),  # type: ignore[valid-type]
        B: T.Buffer((16, 4), "int8", offset_factor=1),  # type: ignore[valid-type]
        C: T.Buffer((16,), "int32", offset_factor=1),  # type: ignore[valid-type]
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),  # type: ignore[valid-type]
        B: T.Buffer((16, 4), "int8", offset_factor=1),  # type: ignore[valid-type]
        C: T.Buffer((16,), "int32", offset_factor=1),  # type: ignore[valid-type]
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(a, 16), dtype="int8x64"),
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )

    TensorIntrin.register(_VNNI, desc, impl)


def has_vnni(target) -> bool:
    """True when the TVM target may execute AVX-512 VNNI (``vpdpbusd`` on 512-bit vectors)."""
    from tvm.target import codegen

    if "x86" not in str(target.attrs.get("mtriple", "x86_64")):
        return False
    feats = set(codegen.llvm_get_cpu_features(target))
    return {"avx512vnni", "avx512bw", "avx512f"} <= feats


@dataclasses.dataclass(frozen=True)
class Geometry:
    """One integer kernel's loops: input codes ``a_shape`` ``[Ha, Wa, Ca]``; output ``[OH, OWp, Op]`` (``OWp``:
    output columns rounded up to the register tile's R, the extra ones computed and never read; ``Op``: output
    channels rounded up to 16)."""

    a_shape: tuple[int, int, int]
    oh: int
    ow: int  # real output columns
    kh: int
    kw: int
    stride: int
    rows: int  # R: output pixels of one register tile
    out_channels: int  # real output channels O

    @property
    def owp(self) -> int:
        return -(-self.ow // self.rows) * self.rows

    @property
    def blocks(self) -> int:
        return -(-self.out_channels // LANES)

    @property
    def reads(self) -> tuple[int, int]:
        """(rows, columns) of input codes the kernel reads."""
        return (self.oh - 1) * self.stride + self.kh, (self.owp - 1) * self.stride + self.kw


def tile_rows(ow: int) -> int:
    """R: the largest divisor of the output width in 8..4 (the register tile's pixels), else 8 (the width is then
    computed in whole tiles and cut), or the width itself when narrower than 4."""
    if ow < 4:
        return ow
    for r in (8, 7, 6, 5, 4):
        if ow % r == 0:
            return r
    return 8


# TVM places a kernel's local buffer of 1024 bytes or more in a workspace allocated per parallel task (a call in and
# out of the runtime per tile), and LLVM then keeps the accumulators in memory between the reduction and the epilogue
_STACK_VECTORS = 15
# a reduction this short (bytes of codes per output pixel) leaves the tile's time to its epilogue: the small tile on
# the stack wins (MobileNetV2's 16-channel 1x1: 271 -> 249 us); longer ones gain more from the larger register tile
_SHORT_REDUCTION = 512


def tile_shape(ow: int, blocks: int, reduction: int) -> tuple[int, int]:
    """(R, NB) of a Conv / Linear kernel's register tile: R output pixels (a divisor of the width in 8..4 where there
    is one, see :func:`tile_rows`) by NB blocks of 16 channels (a divisor of ``blocks``), the most accumulators
    within 28 vectors, or within 15 (on the stack) for a ``reduction`` of at most 512 bytes; ties to the larger R."""
    if ow < 4:
        rows = [ow]
    else:
        rows = [r for r in (8, 7, 6, 5, 4) if ow % r == 0] or [8]
    limit = _STACK_VECTORS if reduction <= _SHORT_REDUCTION else 28
    options = [(r * b, r, b) for r in rows for b in (4, 3, 2, 1) if blocks % b == 0 and r * b <= max(limit, r)]
    _, r, b = max(options)
    return r, b


def _epilogue(acc_value: Any, o: Any, consts: list[Any], requant: tuple[int, int, int, bool] | None) -> Any:
    """int32 ``t = acc + B[o]``; requantizing (``requant`` = (zero, lo, hi, narrow)): the codes, uint8, of
    ``q = floor((floor(t m / 2^16) + rnd) / 2^s) + zero`` clamped to [lo, hi] (:mod:`edgec.ir.integer`).

    ``narrow`` (``|t|`` provably below 2^31 for every input, checked when compiling): in 32-bit lanes, exactly.
    With ``t = th 2^16 + tl`` (``tl`` in [0, 2^16)), ``floor(t m / 2^16) = th m + floor(tl m / 2^16)``, both
    terms within 32 bits as ``m < 2^16``; and with ``rnd = 2^(s-1)``, ``floor((p + rnd) / 2^s) =
    (floor(p / 2^(s-1)) + 1) >> 1``, which cannot overflow as ``|p| < |t|``. Otherwise in int64 lanes."""
    from tvm import tirx

    bc = consts[0]
    if requant is None:
        return acc_value + bc[o]
    m, sh, rnd = consts[1:]
    zv, lo, hi, narrow = requant
    if narrow:
        t = acc_value + bc[o]
        th = tirx.shift_right(t, tirx.const(16, "int32"))
        tl = tirx.bitwise_and(t, tirx.const(0xFFFF, "int32")).astype("uint32")
        low = tirx.shift_right(tl * m[o].astype("uint32"), tirx.const(16, "uint32")).astype("int32")
        p = th * m[o] + low
        s1 = tirx.max(sh[o] - 1, 0)
        up = tirx.shift_right(tirx.shift_right(p, s1) + 1, tirx.const(1, "int32"))
        q = tirx.Select(sh[o] >= 1, up, p) + tirx.const(zv, "int32")
        q = tirx.max(tirx.min(q, tirx.const(hi, "int32")), tirx.const(lo, "int32"))
        return q.astype("uint8")
    t = acc_value.astype("int64") + bc[o].astype("int64")
    p = tirx.shift_right(t * m[o].astype("int64"), tirx.const(16, "int64"))
    q = tirx.shift_right(p + rnd[o].astype("int64"), sh[o].astype("int64")) + tirx.const(zv, "int64")
    q = tirx.max(tirx.min(q, tirx.const(hi, "int64")), tirx.const(lo, "int64"))
    return q.astype("uint8")


def _tile_epilogue(sch: Any, init: Any, out: Any) -> None:
    """The accumulator tile's zeroing vectorized, and the epilogue (already under the tile's loop): channels (the
    innermost loop) in vectors of 16, the rest unrolled."""
    il = sch.get_loops(init)
    if len(il) > 1:
        sch.vectorize(il[-1])
    loops = sch.get_loops(out)[1:]
    if not loops:
        return
    last = loops[-1]
    ext = int(sch.get(last).extent)
    if ext > LANES and ext % LANES == 0:
        outer, last = sch.split(last, [None, LANES])
        loops = [*loops[:-1], outer]
    else:
        loops = loops[:-1]
    sch.vectorize(last)
    for lp in loops:
        sch.unroll(lp)


def gemm_kernel(g: Geometry, requant: tuple[int, int, int, bool] | None, vnni: bool, nb: int) -> Any:
    """The scheduled PrimFunc ``(codes, packed weights, per-channel int32 constants..., out)`` of a Conv / Linear."""
    from tvm import s_tir, te

    Ha, Wa, Ca = g.a_shape
    c4 = Ca // 4
    no = g.blocks
    A = te.placeholder((Ha, Wa, Ca), "uint8", name="A")
    W = te.placeholder((no, g.kh, g.kw, c4, LANES, 4), "int8", name="W")
    consts = [
        te.placeholder((no * LANES,), "int32", name=n)
        for n in (["bias", "mult", "shift", "rnd"] if requant else ["bias"])
    ]
    rkh = te.reduce_axis((0, g.kh), "kh")
    rkw = te.reduce_axis((0, g.kw), "kw")
    rc = te.reduce_axis((0, c4), "c4")
    rj = te.reduce_axis((0, 4), "j")
    s = g.stride
    acc = te.compute(
        (g.oh, g.owp, no, LANES),
        lambda y, x, b, i: te.sum(
            A[y * s + rkh, x * s + rkw, rc * 4 + rj].astype("int32") * W[b, rkh, rkw, rc, i, rj].astype("int32"),
            axis=[rkh, rkw, rc, rj],
        ),
        name="acc",
    )
    out = te.compute(
        (g.oh, g.owp, no * LANES),
        lambda y, x, o: _epilogue(acc[y, x, o // LANES, o % LANES], o, consts, requant),
        name="out",
    )
    sch = s_tir.Schedule(te.create_prim_func([A, W, *consts, out]))
    ab = sch.get_sblock("acc")
    y, x, b, i, kh, kw, c, j = sch.get_loops(ab)
    xo, xi = sch.split(x, [None, g.rows])
    bo, bi = sch.split(b, [None, nb])
    # the larger operand outermost, so its panel stays in cache while the other one streams past
    if W.shape[0] * g.kh * g.kw * Ca * LANES > Ha * Wa * Ca:
        sch.reorder(bo, y, xo, xi, bi, i, kh, kw, c, j)
        par = sch.fuse(bo, y, xo)
    else:
        sch.reorder(y, xo, bo, xi, bi, i, kh, kw, c, j)
        par = sch.fuse(y, xo, bo)
    sch.parallel(par)
    sch.reverse_compute_at(sch.get_sblock("out"), par)
    sch.reorder(kh, kw, c, xi, bi, i, j)
    if vnni:
        init = sch.decompose_reduction(ab, kh)
        _register_vnni()
        sch.tensorize(i, _VNNI)
    else:
        sch.unroll(j)
        sch.vectorize(i)  # before the zeroing is split off: a vectorized loop's block must be a whole reduction
        init = sch.decompose_reduction(ab, kh)
    sch.unroll(xi)
    sch.unroll(bi)
    _tile_epilogue(sch, init, sch.get_sblock("out"))
    return sch.mod["main"]


def dw_kernel(
    g: Geometry, requant: tuple[int, int, int, bool] | None, padding: tuple[int, int, int, int, int] | None = None
) -> Any:
    """The scheduled PrimFunc ``(codes, weights [KH, KW, Cp], per-channel constants..., out)`` of a depthwise
    convolution: int32 products summed over the taps, 16 channels per vector. ``padding`` = (top, left, real
    height, real width, zero point): the codes are read unpadded, a tap outside the real image reading the zero
    point (a condition per pixel and tap, not per channel: cheaper than a pass writing the padded image)."""
    from tvm import s_tir, te, tirx

    Ha, Wa, Ca = g.a_shape
    A = te.placeholder((Ha, Wa, Ca), "uint8", name="A")
    W = te.placeholder((g.kh, g.kw, Ca), "int8", name="W")
    consts = [
        te.placeholder((Ca,), "int32", name=n) for n in (["bias", "mult", "shift", "rnd"] if requant else ["bias"])
    ]
    rkh = te.reduce_axis((0, g.kh), "kh")
    rkw = te.reduce_axis((0, g.kw), "kw")
    s = g.stride

    def read(y: Any, x: Any, c: Any) -> Any:
        if padding is None:
            return A[y, x, c]
        pt, pl, H, W_, zx = padding
        h, w = y - pt, x - pl
        inside = tirx.all(h >= 0, h < H, w >= 0, w < W_)
        v = A[tirx.max(tirx.min(h, H - 1), 0), tirx.max(tirx.min(w, W_ - 1), 0), c]
        return tirx.if_then_else(inside, v, tirx.const(zx, "uint8"))

    acc = te.compute(
        (g.oh, g.owp, Ca),
        lambda y, x, c: te.sum(
            read(y * s + rkh, x * s + rkw, c).astype("int32") * W[rkh, rkw, c].astype("int32"), axis=[rkh, rkw]
        ),
        name="acc",
    )
    out = te.compute((g.oh, g.owp, Ca), lambda y, x, c: _epilogue(acc[y, x, c], c, consts, requant), name="out")
    sch = s_tir.Schedule(te.create_prim_func([A, W, *consts, out]))
    ab = sch.get_sblock("acc")
    y, x, c, kh, kw = sch.get_loops(ab)
    xo, xi = sch.split(x, [None, g.rows])
    co, ci = sch.split(c, [None, LANES])
    sch.reorder(y, xo, co, xi, ci, kh, kw)
    par = sch.fuse(y, xo, co)
    sch.parallel(par)
    sch.reverse_compute_at(sch.get_sblock("out"), par)
    sch.reorder(kh, kw, xi, ci)
    sch.vectorize(ci)  # before the zeroing is split off: a vectorized loop's block must be a whole reduction
    sch.unroll(xi)
    sch.unroll(kw)
    sch.unroll(kh)
    init = sch.decompose_reduction(ab, kh)
    _tile_epilogue(sch, init, sch.get_sblock("out"))
    return sch.mod["main"]


def code_range(q: Any) -> tuple[float, float, int]:
    """An activation quantization's code range (lo, hi) and the offset storing a code as a byte (signed + 128)."""
    return (-128.0, 127.0, 128) if q.signed else (0.0, 255.0, 0)


def image_codes_kernel(
    chw: tuple[int, ...], reads: tuple[int, int], pads: tuple[int, ...], q: Any, zc: int, divide: bool, lanes: int
) -> Any:
    """The PrimFunc ``(x [1, C, H, W] float32, out [rows, columns, 4] uint8)`` for an image of C <= 4 channels: each
    pixel's codes one 32-bit word (channel c in byte c, the zero point code ``zc`` in the bytes past C and in the
    margins), vectorized along the image's rows (NCHW reads contiguous, one word store per pixel; computed per
    channel it was a 4-lane kernel gathering from three planes: 256 of MobileNetV2's 3100 us). Codes:
    ``clamp(nearbyint(x / s) + z)`` (``divide``: QuantizeLinear's own arithmetic) or ``x * (1 / s)`` for a value
    already fake-quantized with that scale (see :meth:`IntBuilder._codes_of`). The only float arithmetic is that
    product or quotient, then the rounding: nothing an FMA could contract."""
    from tvm.script import tirx as T  # noqa: F401 (the script below names it)

    C, H, W = chw
    hr, wr = reads
    pt, pl = pads
    hin, win = min(H, hr - pt), min(W, wr - pl)  # the image rows / columns the convolution reads
    vec = max(win, 0) // lanes * lanes
    lo, hi, off = code_range(q)

    def f32(v: Any) -> str:
        return f"T.float32({float(np.float32(v))!r})"

    k = f32(q.scale) if divide else f32(np.float32(1) / np.float32(q.scale))

    def word(w: str) -> str:
        parts = []
        for ch in range(4):
            if ch >= C:
                v = f"T.uint32({zc})"
            else:
                r = f"T.nearbyint(x[0, {ch}, hh, {w}] {'/' if divide else '*'} {k}) + {f32(q.zero_point)}"
                r = f"T.max(T.min({r}, {f32(hi)}), {f32(lo)})"
                v = f'T.Cast("uint32", T.Cast("int32", {r}) + {off})'
            parts.append(f"({v} << T.uint32({8 * ch}))" if ch else v)
        return " | ".join(parts)

    zw = f"T.uint32({zc * 0x01010101})"
    src = f"""
@T.prim_func(s_tir=True)
def main(x: T.Buffer((1, {C}, {H}, {W}), "float32"), out: T.Buffer(({hr}, {wr}, 4), "uint8")):
    T.func_attr({{"tirx.noalias": True}})
    o32 = T.decl_buffer(({hr * wr},), "uint32", data=out.data)
    for h in T.parallel({hr}):
        hh = h - {pt}
        if hh >= 0 and hh < {hin}:
            for w in range({pl}):
                o32[h * {wr} + w] = {zw}
            for wo in range({vec // lanes}):
                for wi in T.vectorized({lanes}):
                    o32[h * {wr} + {pl} + wo * {lanes} + wi] = {word(f"wo * {lanes} + wi")}
            for w in range({vec}, {max(win, 0)}):
                o32[h * {wr} + {pl} + w] = {word("w")}
            for w in range({pl + max(win, 0)}, {wr}):
                o32[h * {wr} + w] = {zw}
        else:
            for w in range({wr}):
                o32[h * {wr} + w] = {zw}
"""
    import tvm

    return tvm.script.from_source(src).without_attr("global_symbol")


def _family(c: IntOp) -> str:
    return "linear" if c.kind == "linear" else "image"


def _fits_int32(c: IntOp, bias: np.ndarray) -> bool:
    """True when ``t = acc + B`` stays within int32 for any codes: ``255 * sum|w| + |B| < 2^31`` per channel (``bias``:
    B, channel_consts' first row)."""
    bound = 255 * np.abs(c.wq.reshape(c.cout, -1).astype(np.int64)).sum(1) + np.abs(bias[: c.cout].astype(np.int64))
    return bool(bound.max() < (1 << 31))


def pack_gemm_weights(c: IntOp, ca: int) -> np.ndarray:
    """int8 ``[O/16, KH, KW, Ca/4, 16, 4]`` (zeros beyond the real channels)."""
    O = c.cout
    wq = c.wq if c.kind != "linear" else c.wq[:, :, None, None]
    _, C, KH, KW = wq.shape
    no = -(-O // LANES)
    w = np.zeros((no * LANES, ca, KH, KW), np.int8)
    w[:O, :C] = wq
    return np.ascontiguousarray(w.reshape(no, LANES, ca // 4, 4, KH, KW).transpose(0, 4, 5, 2, 1, 3))


def channel_consts(c: IntOp, width: int) -> list[np.ndarray]:
    """The per-channel int32 constants of the epilogue, ``width`` long (zeros beyond the real channels): ``B``
    (``- zx * sum(w)``, plus the bias in accumulator units when requantizing), then ``m, s, rnd``."""
    O = c.cout
    bias = -c.zx * c.wsum()
    rows = [bias]
    if c.fused is not None:
        bq, m, s, rnd = c.requant()
        rows = [bias + bq, m, s, rnd]
    if (255 * np.abs(c.wq.reshape(O, -1).astype(np.int64)).sum(1)).max(initial=0) >= 1 << 31:
        raise UnsupportedError(
            f"cpu: node {c.node.name!r}: its sum of byte products can exceed the int32 accumulator (a reduction of "
            "tens of thousands of int8 weights); compile with cpu{int8=false} to simulate its int8 activations in float"
        )
    out = []
    for r in rows:
        if np.abs(r).max(initial=0) >= 1 << 31:
            raise UnsupportedError(
                f"cpu: node {c.node.name!r}: its bias / zero-point correction does not fit the int32 accumulator "
                "(a huge bias against tiny scales); compile with cpu{int8=false} to simulate this model's int8 "
                "activations in float"
            )
        a = np.zeros(width, np.int32)
        a[:O] = r
        out.append(a)
    return out


class IntBuilder(CpuBuilder):
    """The cpu target's Relax builder with :class:`IntOp` nodes lowered to integer kernels (see the module)."""

    def __init__(
        self, model, ops: dict[int, IntOp], vnni: bool, lanes: int, fallback_ops: frozenset[str] | None = None
    ):
        """``ops``: :func:`edgec.ir.integer.plan` of ``model`` with the target's limits; ``lanes``: see CpuBuilder."""
        super().__init__(model, lanes, fallback_ops=fallback_ops)
        self.vnni = vnni
        self.ops = ops
        self.chained = chained(ops)
        # (value, layout family) -> Relax var of its codes, uint8: [H, W, C] for convolutions ("image"), [1, M, K] for
        # Linear; an unfused value may be read by both
        self.codes: dict[tuple[int, str], Any] = {}
        self.nhwc: dict[int, Any] = {}  # value -> Relax var of the same float image in NHWC
        self.kernels: list[str] = []
        self.raw: dict[int, Any] = {}  # value -> Relax var before fake_quant (see fake_quant)

    def lower_special(self, n: Node) -> bool:
        if id(n) in self.chained:
            return True  # a Relu / Clip folded into its producer's requantizing epilogue
        c = self.ops.get(id(n))
        if c is None:
            return self._lower_nhwc(n) or super().lower_special(n)
        relax = self.relax
        image = self._image_source(c)  # its codes written below, with the padding this convolution reads
        x = None if image else self._codes_of(c)
        if c.kind == "linear":
            ys = n.outputs[0].static_shape
            assert ys is not None  # plan() takes only nodes with a static output shape
            oh, ow, kh, kw, s = 1, int(np.prod(ys[:-1])), 1, 1, 1
            pads = (0, 0, 0, 0)
        else:
            kh, kw = (int(d) for d in c.wq.shape[2:])
            s = int(n.attr("strides", [1, 1])[0])
            pt, pl, pb, pr = (int(p) for p in n.attr("pads", [0, 0, 0, 0]))
            pads = (pt, pl, pb, pr)
            _, _, oh, ow = (int(d) for d in n.outputs[0].static_shape or ())
        xs = c.x.static_shape or ()
        ha, wa, ca = (int(xs[2]), int(xs[3]), 4) if x is None else (int(d) for d in x.ty.shape.values)
        in_shape = (ha, wa, ca)
        nb = 1
        if c.kind == "dwconv":
            rows = tile_rows(ow)
        else:
            rows, nb = tile_shape(ow, -(-c.cout // LANES), kh * kw * in_shape[2])
        g = Geometry(in_shape, oh, ow, kh, kw, s, rows, c.cout)
        hr, wr = g.reads
        padded = any(pads) or hr > in_shape[0] or wr > in_shape[1]
        padding = None
        if c.kind == "dwconv" and padded:
            padding = (pads[0], pads[1], int(xs[2]), int(xs[3]), c.zx)  # read in place (dw_kernel)
        elif padded:
            x = self._image_codes(c, pads, (hr, wr)) if image else self._pad(x, c, pads, (hr, wr))
            g = dataclasses.replace(g, a_shape=(hr, wr, in_shape[2]))
        elif image:
            x = self._image_codes(c, pads, (ha, wa))
        name = f"i{len(self.kernels)}_{safe_name(n.name)}"
        ca = g.a_shape[2]
        width = ca if c.kind == "dwconv" else g.blocks * LANES
        consts = channel_consts(c, width)
        requant = (c.zv, c.lo, c.hi, _fits_int32(c, consts[0])) if c.fused is not None else None
        if c.kind == "dwconv":
            f = dw_kernel(g, requant, padding)
            w = np.zeros((kh, kw, ca), np.int8)
            w[:, :, : c.cout] = c.wq[:, 0].transpose(1, 2, 0)
        else:
            f = gemm_kernel(g, requant, self.vnni, nb)
            w = pack_gemm_weights(c, ca)
        f = f.without_attr("global_symbol").with_attrs(
            {INTEGER_KERNEL: True, "op_pattern": 8, "tirx.is_scheduled": True}
        )  # 8: opaque, never fused
        gv = self.bb.add_func(f, name)
        self.kernels.append(name)
        args = [x, relax.const(w, "int8")] + [relax.const(a, "int32") for a in consts]
        out_dtype = "uint8" if requant else "int32"
        y = self.emit(relax.call_tir(gv, relax.Tuple(args), relax.TensorType([oh, g.owp, width], out_dtype)))
        if requant is not None:
            self.codes[(id(c.fused), _family(c))] = y
            return True
        op = relax.op
        if g.owp != ow or width != c.cout:
            y = self.emit(op.strided_slice(y, axes=[1, 2], begin=[0, 0], end=[ow, c.cout]))
        f32 = self.emit(op.astype(y, "float32"))
        f32 = self.emit(op.multiply(f32, relax.const(c.S(), "float32")))  # two roundings, no FMA (module docstring)
        f32 = self.emit(op.add(f32, relax.const(c.bias.astype(np.float32), "float32")))
        o = n.outputs[0]
        if c.kind == "linear":
            f32 = self.emit(op.reshape(f32, list(o.static_shape or ())))
            self.env[id(o)] = self.fake_quant(f32, o) if o.quant is not None else f32
        else:
            self._set_nhwc(o, self.emit(op.expand_dims(f32, 0)))
        return True

    def _set_nhwc(self, o: Any, y: Any) -> None:
        """``o``'s value computed in NHWC: kept for the consumers that take NHWC (the quantize kernels, the ops of
        :meth:`_lower_nhwc`), and transposed to NCHW for the others (dead code, removed, where there are none)."""
        y = self.fake_quant(y, o) if o.quant is not None else y
        self.nhwc[id(o)] = y
        self.env[id(o)] = self.emit(self.relax.op.permute_dims(y, [0, 3, 1, 2]))

    def _lower_nhwc(self, n: Node) -> bool:
        """Between integer kernels, the float ops of a residual block (Add / Sub / Mul of two images or an image
        and a scalar, Relu, Clip, 2-D MaxPool) computed in NHWC, where their image inputs are: the same
        elementwise arithmetic in another order of elements, so no transpose runs between two integer kernels."""
        op = n.qualified_op
        acts = [v for v in n.inputs if v is not None and not v.is_const]
        if (
            op not in _NHWC_OPS
            or len(n.outputs) != 1
            or not acts
            or any(id(v) not in self.nhwc or v.static_shape != acts[0].static_shape for v in acts)
            or (op != "MaxPool" and n.outputs[0].static_shape != acts[0].static_shape)
            or any(v is not None and v.is_const and v.static_shape is None for v in n.inputs)
            or any(v is not None and v.is_const and int(np.prod(v.static_shape or ())) != 1 for v in n.inputs)
        ):
            return False
        if op == "MaxPool":
            if (
                n.attr("storage_order", 0)
                or n.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET")
                or len(n.attr("kernel_shape")) != 2
            ):
                return False
            y = self.emit(
                self.relax.op.nn.max_pool2d(
                    self.nhwc[id(acts[0])],
                    pool_size=n.attr("kernel_shape"),
                    strides=n.attr("strides", [1, 1]),
                    padding=n.attr("pads", [0, 0, 0, 0]),
                    dilation=n.attr("dilations", [1, 1]),
                    ceil_mode=bool(n.attr("ceil_mode", 0)),
                    layout="NHWC",
                )
            )
        else:
            from ...api.relax import LOWERINGS

            saved = {id(v): self.env[id(v)] for v in acts}
            try:
                self.env.update({id(v): self.nhwc[id(v)] for v in acts})
                y = LOWERINGS[op](self, n)  # elementwise: the same lowering, on the NHWC images
            finally:
                self.env.update(saved)
        self._set_nhwc(n.outputs[0], y)
        return True

    def fake_quant(self, x: Any, v: Any) -> Any:
        y = super().fake_quant(x, v)
        self.raw[id(v)] = x  # the value before QuantizeLinear + DequantizeLinear: _image_codes quantizes it itself
        return y

    def _image_source(self, c: IntOp) -> bool:
        """True where ``c`` (a convolution) reads an NCHW image of at most 4 channels (a network's input) whose codes
        no kernel wrote yet: :meth:`_image_codes` writes them, one 32-bit word per pixel."""
        xs = c.x.static_shape or ()
        return (
            c.kind == "conv"
            and len(xs) == 4
            and int(xs[1]) <= 4
            and (id(c.x), "image") not in self.codes
            and id(c.x) not in self.nhwc
        )

    def _image_codes(self, c: IntOp, pads: tuple[int, ...], reads: tuple[int, int]) -> Any:
        """The u8 codes ``[rows, columns, 4]`` of an NCHW image of at most 4 channels, with the margins the convolution
        reads (its zero point), in one kernel (:func:`image_codes_kernel`): quantized from the value before its
        fake quantization where the builder has it (the graph input: QuantizeLinear's own division), else from the
        fake-quantized value (:meth:`_codes_of`'s multiply)."""
        q = c.xq
        xs = tuple(int(d) for d in c.x.static_shape or ())
        raw = self.raw.get(id(c.x))
        f = image_codes_kernel(
            xs[1:],
            reads,
            pads[:2],
            q,
            c.zx,
            divide=raw is not None,
            lanes=max(self.lanes, 4),
        ).with_attrs({INTEGER_KERNEL: True, "op_pattern": 8, "tirx.is_scheduled": True})
        gv = self.bb.add_func(f, f"image_codes_{safe_name(c.x.name)}")
        src = raw if raw is not None else self.get(c.x)
        return self.emit(self.relax.call_tir(gv, self.relax.Tuple([src]), self.relax.TensorType([*reads, 4], "uint8")))

    def _codes_of(self, c: IntOp) -> Any:
        """The Relax var of ``c``'s input codes (a quantize kernel from the float value unless a requantizing
        producer wrote them)."""
        key = id(c.x)
        if (key, _family(c)) in self.codes:
            return self.codes[(key, _family(c))]
        from tvm import te, tirx

        q = c.xq
        xs = tuple(int(d) for d in c.x.static_shape or ())
        nhwc = key in self.nhwc and c.kind != "linear"  # a Linear reads its input's own (last) axis
        xf = self.nhwc[key] if nhwc else self.get(c.x)
        if c.kind == "linear":
            C = xs[-1]
            M = int(np.prod(xs[:-1]))
            xf = self.emit(self.relax.op.reshape(xf, [M, C]))
            shape = (1, M, -(-C // 4) * 4)
        else:
            _, C, H, W = xs
            shape = (H, W, -(-C // 4) * 4)
        linear = c.kind == "linear"
        lo, hi, off = code_range(q)
        zc = c.zx

        def prep(a: Any) -> Any:
            def f(h: Any, w: Any, ch: Any) -> Any:
                chs = tirx.min(ch, C - 1)
                v = a[w, chs] if linear else a[0, h, w, chs] if nhwc else a[0, chs, h, w]
                # v is this activation's fake-quantized value, (q - z) * s rounded once (the builder applies
                # fake_quant to every quantized value), so v * (1 / s) is within 255 * 2^-22 of the integer q - z:
                # a multiply finds the code QuantizeLinear's division finds, at a fraction of its cost
                code = tirx.nearbyint(v * tirx.const(np.float32(1) / np.float32(q.scale), "float32")) + tirx.const(
                    float(q.zero_point), "float32"
                )
                code = tirx.max(tirx.min(code, tirx.const(hi, "float32")), tirx.const(lo, "float32"))
                u = (code.astype("int32") + off).astype("uint8")
                return tirx.if_then_else(ch < C, u, tirx.const(zc, "uint8"))

            return te.compute(shape, f, name="quantize_codes")

        y = self.bb.emit_te(prep, xf, primfunc_name_hint="quantize_codes")
        self.codes[(key, _family(c))] = y
        return y

    def _pad(self, x: Any, c: IntOp, pads: tuple[int, ...], reads: tuple[int, int]) -> Any:
        """Codes with the margins the kernel reads: the input's zero point outside the real image (rows / columns
        past the real ones in ``x`` are a producer's spare tile columns, read as padding too)."""
        from tvm import te, tirx

        xs = c.x.static_shape or ()
        H, W = (1, int(np.prod(xs[:-1]))) if c.kind == "linear" else (int(xs[2]), int(xs[3]))
        pt, pl = pads[0], pads[1]
        zc = c.zx

        def pad(a: Any) -> Any:
            ca = a.shape[2]

            def f(h: Any, w: Any, ch: Any) -> Any:
                hh, ww = h - pt, w - pl
                ok = tirx.all(hh >= 0, hh < H, ww >= 0, ww < W)
                v = a[tirx.max(tirx.min(hh, H - 1), 0), tirx.max(tirx.min(ww, W - 1), 0), ch]
                return tirx.if_then_else(ok, v, tirx.const(zc, "uint8"))

            return te.compute((reads[0], reads[1], ca), f, name="pad_codes")

        return self.bb.emit_te(pad, x, primfunc_name_hint="pad_codes")
