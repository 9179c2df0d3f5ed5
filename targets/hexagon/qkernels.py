"""Integer HVX kernels for the hexagon target: int8 Conv2d / depthwise Conv2d / Linear with int32 accumulation
and a fused requantizing (or dequantizing) epilogue, written in TIR and compiled by TVM's LLVM backend.

Arithmetic (the integer semantics defined in :mod:`edgec.ir.integer`): activations are unsigned bytes ``u``
(a signed code ``q`` is stored as ``q + 128``) and weights signed bytes, so one
``vrmpy(Vu.ub, Rt.b)`` (``llvm.hexagon.V6.vrmpybus.acc.128B``) does 4 multiply-accumulates in each of 32
int32 lanes; two of them fit in one packet. The lanes are 32 neighbouring output pixels of one output row
(for a Linear: 32 rows of the input), so one vector load of activations serves every output channel, and
each output channel's 4 weights are one scalar register.

Activation layout (``Layout``): ``uint8 [P + H + P, ceil(C / 4), Wm, 4]``: for each image row and group of
4 channels, a row of ``Wm`` 4-byte words, one per pixel, with pixel 0 at word ``LEFT`` (= 32, so stores are
vector aligned). Rows and columns outside the image hold the zero point's code, which is how a consumer's
padding is read; words past them are never used by a valid output lane. A Linear's input ``[M, K]`` is the
image ``C = K, H = 1, W = M``.

Epilogues, per output channel ``o`` with ``t = sum(u * w) + B[o]`` (``B`` folds the zero point and the bias):

* codes: ``p = (t * m[o]) >> 16`` (``vmpyewuh``), ``q = (p + rnd[o]) >> s[o]``, ``q = clamp(q + z, lo, hi)``;
  four channels are packed into one word per pixel and stored in the consumer's layout;
* float: ``y = float(t) * S[o] + b[o]`` in scalar float32 (v67's HVX has no float), stored NCHW / row-major.
"""

import dataclasses

LEFT = 32  # word column of pixel 0 in a row of an activation layout
VRMPY = "llvm.hexagon.V6.vrmpybus.acc.128B"
MULHI = "llvm.hexagon.V6.vmpyewuh.128B"


def _up(x: int, m: int) -> int:
    return -(-x // m) * m


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where an integer activation lives: channels ``c``, image ``h x w``, a margin of ``p`` zero-point rows
    (columns are always margined by LEFT words on the left) and room for reads up to word ``need``."""

    c: int
    h: int
    w: int
    p: int = 0
    need: int = 0  # the largest word column (exclusive) any consumer reads

    @property
    def c4(self) -> int:
        return -(-self.c // 4)

    @property
    def rows(self) -> int:
        return self.h + 2 * self.p

    @property
    def wm(self) -> int:
        return _up(max(LEFT + _up(self.w, 32) + 32, self.need), 32)

    @property
    def shape(self) -> list[int]:
        return [self.rows, self.c4, self.wm, 4]

    def reads_to(self, ow: int, stride: int, kw: int, pad: int) -> int:
        """The word column (exclusive) a consumer with these parameters reads up to."""
        nb = -(-ow // 32)
        return LEFT - pad + (nb * 32 - 1) * stride + kw + (32 if stride == 2 else 0)


def to_layout(img, layout: Layout, zero: int):
    """numpy: an unsigned-code image ``[C, H, W]`` in ``layout`` (margins and padding channels = ``zero``)."""
    import numpy as np

    a = np.full(layout.shape, zero, np.uint8)
    c, h, w = img.shape
    full = np.full((layout.c4 * 4, h, w), zero, np.uint8)
    full[:c] = img
    a[layout.p : layout.p + h, :, LEFT : LEFT + w, :] = full.reshape(layout.c4, 4, h, w).transpose(2, 0, 3, 1)
    return a


def from_layout(a, layout: Layout):
    """numpy: the image ``[C, H, W]`` stored in an activation layout."""
    L = layout
    return a[L.p : L.p + L.h, :, LEFT : LEFT + L.w, :].transpose(1, 3, 0, 2).reshape(L.c4 * 4, L.h, L.w)[: L.c]


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One integer kernel: a Conv2d (``depthwise``: one input channel per output channel) or a Linear (a 1x1
    conv over the image ``1 x M``), its input layout, and its epilogue."""

    name: str
    src: Layout
    cout: int
    kh: int
    kw: int
    stride: int
    pad_t: int
    pad_l: int
    oh: int
    ow: int
    depthwise: bool = False
    dst: "Layout | None" = None  # codes out in this layout; None: float out
    float_shape: tuple = ()  # the float output's shape (NCHW conv, or the Linear's [..., N])
    linear: bool = False  # float out is [rows, N] (else [1, O, OH, OW])
    zero: int = 0  # the output's zero point code (u-domain), codes out
    lo: int = 0
    hi: int = 255

    @property
    def taps(self) -> int:
        return self.kh * self.kw * (1 if self.depthwise else self.src.c4)

    @property
    def block(self) -> int:
        """Output channels per block (accumulators held in registers)."""
        if self.depthwise:
            return 4
        for b in (8, 4, 2, 1):
            if self.cout % b == 0 and (self.dst is None or b % 4 == 0):
                return b
        raise ValueError(self.cout)


def conv_kernel(spec: ConvSpec):
    """The TIR PrimFunc for ``spec``. Arguments: ``x`` (uint8, ``spec.src``), ``w`` (int8 ``[O, taps, 4]``),
    ``pi`` (int32 ``[O, 4]``: B, m, s, rnd), ``pf`` (float32 ``[O, 2]``: S, b; float epilogue only), ``out``."""
    from tvm.script import tirx as T

    src, dst = spec.src, spec.dst
    O, CO, TP = spec.cout, spec.block, spec.taps
    C4, WM, KH, KW, S = src.c4, src.wm, spec.kh, spec.kw, spec.stride
    OH, OW, NBW = spec.oh, spec.ow, -(-spec.ow // 32)
    ROW0, COL0 = src.p - spec.pad_t, LEFT - spec.pad_l
    DW = spec.depthwise
    EVEN = [2 * i for i in range(32)]
    xwords = src.rows * C4 * WM

    @T.macro
    def accumulate(xw, ww, pi, acc, oh, owb, ob):
        """acc[co] = B[o] + sum over taps of vrmpy(32 pixels x 4 channels, the channel's 4 weights)."""
        for co in T.unroll(CO):
            acc[T.ramp(co * 32, 1, 32)] = T.broadcast(pi[ob * CO + co, 0], 32)
        for kh in range(KH):
            for kw in range(KW):
                for c4 in range(1 if DW else C4):
                    base = ((oh * S + kh + ROW0) * C4 + (ob if DW else c4)) * WM + COL0 + owb * 32 * S + kw
                    if S == 1:
                        v = xw[T.ramp(base, 1, 32)]
                    else:
                        v = T.Shuffle([xw[T.ramp(base, 1, 32)], xw[T.ramp(base + 32, 1, 32)]], EVEN)
                    for co in T.unroll(CO):
                        acc[T.ramp(co * 32, 1, 32)] = T.call_llvm_pure_intrin(
                            "int32x32",
                            VRMPY,
                            acc[T.ramp(co * 32, 1, 32)],
                            v,
                            ww[(ob * CO + co) * TP + (kh * KW + kw) * (1 if DW else C4) + c4],
                        )

    if dst is not None:
        O4, OWM, OP, OROWS = dst.c4, dst.wm, dst.p, dst.rows
        Z = spec.zero
        ZW = Z | (Z << 8) | (Z << 16) | (Z << 24)
        ZW = ZW - (1 << 32) if ZW >= 1 << 31 else ZW
        RIGHT = LEFT + _up(OW, 32)
        LO, HI = spec.lo, spec.hi

        @T.prim_func(private=True)
        def qconv(
            x: T.Buffer(tuple(src.shape), "uint8", align=128),
            w: T.Buffer((O, TP, 4), "int8", align=128),  # TVMScript buffer declarations, not types
            pi: T.Buffer((O, 4), "int32", align=128),
            out: T.Buffer(tuple(dst.shape), "uint8", align=128),
        ):
            T.func_attr({"tirx.noalias": True})
            xw = T.decl_buffer((xwords,), "int32", data=x.data, align=128)
            ww = T.decl_buffer((O * TP,), "int32", data=w.data, align=128)
            ow_ = T.decl_buffer((OROWS * O4 * OWM,), "int32", data=out.data, align=128)
            acc = T.decl_buffer((CO * 32,), "int32", scope="local")
            for oh in range(OH):
                for owb in range(NBW):
                    for ob in range(O // CO):
                        accumulate(xw, ww, pi, acc, oh, owb, ob)
                        for g in T.unroll(CO // 4):
                            word = T.broadcast(0, 32)
                            for j in T.unroll(4):
                                o = ob * CO + g * 4 + j
                                p = T.call_llvm_pure_intrin(
                                    "int32x32", MULHI, acc[T.ramp((g * 4 + j) * 32, 1, 32)], T.broadcast(pi[o, 1], 32)
                                )
                                q = T.shift_right(p + T.broadcast(pi[o, 3], 32), T.broadcast(pi[o, 2], 32))
                                q = T.max(T.min(q + T.broadcast(Z, 32), T.broadcast(HI, 32)), T.broadcast(LO, 32))
                                word = word | T.shift_left(q, T.broadcast(j * 8, 32))
                            ow_[T.ramp(((oh + OP) * O4 + ob * (CO // 4) + g) * OWM + LEFT + owb * 32, 1, 32)] = (
                                T.Select(T.ramp(owb * 32, 1, 32) < T.broadcast(OW, 32), word, T.broadcast(ZW, 32))
                            )
            # The margins a consumer reads as padding: the left words, the words right of the last block, and
            # the rows above and below the image.
            for r in range(OROWS):
                for c in range(O4):
                    if r < OP or r >= OP + OH:
                        for b in range(OWM // 32):
                            ow_[T.ramp((r * O4 + c) * OWM + b * 32, 1, 32)] = T.broadcast(ZW, 32)
                    else:
                        ow_[T.ramp((r * O4 + c) * OWM, 1, 32)] = T.broadcast(ZW, 32)
                        for b in range((OWM - RIGHT) // 32):
                            ow_[T.ramp((r * O4 + c) * OWM + RIGHT + b * 32, 1, 32)] = T.broadcast(ZW, 32)

        return qconv

    LIN = spec.linear
    NOUT = 1
    for d in spec.float_shape:
        NOUT *= d

    @T.prim_func(private=True)
    def fconv(
        x: T.Buffer(tuple(src.shape), "uint8", align=128),
        w: T.Buffer((O, TP, 4), "int8", align=128),  # TVMScript buffer declarations, not types
        pi: T.Buffer((O, 4), "int32", align=128),
        pf: T.Buffer((O, 2), "float32", align=128),
        out: T.Buffer(tuple(spec.float_shape), "float32", align=128),
    ):
        T.func_attr({"tirx.noalias": True})
        xw = T.decl_buffer((xwords,), "int32", data=x.data, align=128)
        ww = T.decl_buffer((O * TP,), "int32", data=w.data, align=128)
        of = T.decl_buffer((NOUT,), "float32", data=out.data, align=128)
        acc = T.decl_buffer((CO * 32,), "int32", scope="local")
        for oh in range(OH):
            for owb in range(NBW):
                for ob in range(O // CO):
                    accumulate(xw, ww, pi, acc, oh, owb, ob)
                    for co in range(CO):
                        for lane in range(32):
                            if owb * 32 + lane < OW:
                                o = ob * CO + co
                                # An opaque call keeps the multiply and the add two roundings (LLVM would fuse
                                # them into one fused multiply-add, which the reference does not do).
                                y = T.call_pure_extern(
                                    "float32", "edgec_fence", T.Cast("float32", acc[co * 32 + lane]) * pf[o, 0]
                                )
                                if LIN:
                                    of[(owb * 32 + lane) * O + o] = y + pf[o, 1]
                                else:
                                    of[(o * OH + oh) * OW + owb * 32 + lane] = y + pf[o, 1]

    return fconv


def float_linear_kernel(m: int, k: int, n: int, lanes: int = 32, relu: bool = False):
    """``y[m, n] = max?(sum_k x[m, k] * wt[k, n] + b[n])`` in float32 vectors of ``lanes`` output columns
    (``wt`` is the weight transposed and zero-padded to ``[k, np]``, ``np`` a multiple of ``lanes``).

    On v68 (``+hvx-qfloat``) and v73+ (``+hvx-ieee-fp``) LLVM emits HVX float multiplies and adds; on v67,
    which has no HVX float, it scalarizes the vectors (the shape of a miscompile once seen with 32 lanes)."""
    from tvm.script import tirx as T

    L = lanes
    NP = _up(n, L)
    NB = NP // L
    FULL = n // L

    @T.prim_func(private=True)
    def flinear(
        x: T.Buffer((m, k), "float32", align=128),
        wt: T.Buffer((k, NP), "float32", align=128),  # TVMScript buffer declarations, not types
        b: T.Buffer((NP,), "float32", align=128),
        y: T.Buffer((m, n), "float32", align=128),
    ):
        T.func_attr({"tirx.noalias": True})
        yf = T.decl_buffer((m * n,), "float32", data=y.data)
        acc = T.decl_buffer((L,), "float32", scope="local")
        for i in range(m):
            for nb in range(NB):
                acc[T.ramp(0, 1, L)] = b[T.ramp(nb * L, 1, L)]
                for kk in range(k):
                    acc[T.ramp(0, 1, L)] = (
                        acc[T.ramp(0, 1, L)] + T.broadcast(x[i, kk], L) * wt[kk, T.ramp(nb * L, 1, L)]
                    )
                if relu:
                    acc[T.ramp(0, 1, L)] = T.max(acc[T.ramp(0, 1, L)], T.broadcast(T.float32(0), L))
                if nb < FULL:
                    yf[T.ramp(i * n + nb * L, 1, L)] = acc[T.ramp(0, 1, L)]
                else:
                    for j in range(L):
                        if nb * L + j < n:
                            yf[i * n + nb * L + j] = acc[j]

    return flinear


def float_conv_kernel(
    c: int, h: int, w: int, o: int, kh: int, kw: int, stride: int, pads: tuple, oh: int, ow: int, lanes: int = 32
):
    """A float32 NCHW Conv2d (batch 1, group 1) whose vectors are ``lanes`` output channels:
    ``acc[o..o+lanes] += x[c, ih, iw] * wt[c, kh, kw, o..o+lanes]`` (``wt`` the weight transposed and zero
    padded to ``[C, KH, KW, OP]``), bias first, padding taps skipped. HVX float on v68+ (compile-only here)."""
    from tvm.script import tirx as T

    L = lanes
    OP = _up(o, L)
    NB = OP // L
    PT, PL = pads[0], pads[1]
    NOUT = o * oh * ow

    @T.prim_func(private=True)
    def fconv2d(
        x: T.Buffer((1, c, h, w), "float32", align=128),
        wt: T.Buffer((c, kh, kw, OP), "float32", align=128),  # TVMScript buffer declarations, not types
        b: T.Buffer((OP,), "float32", align=128),
        y: T.Buffer((1, o, oh, ow), "float32", align=128),
    ):
        T.func_attr({"tirx.noalias": True})
        yf = T.decl_buffer((NOUT,), "float32", data=y.data)
        acc = T.decl_buffer((L,), "float32", scope="local")
        for i in range(oh):
            for j in range(ow):
                for nb in range(NB):
                    acc[T.ramp(0, 1, L)] = b[T.ramp(nb * L, 1, L)]
                    for ci in range(c):
                        for p in range(kh):
                            for q in range(kw):
                                if 0 <= i * stride + p - PT < h and 0 <= j * stride + q - PL < w:
                                    acc[T.ramp(0, 1, L)] = (
                                        acc[T.ramp(0, 1, L)]
                                        + T.broadcast(x[0, ci, i * stride + p - PT, j * stride + q - PL], L)
                                        * wt[ci, p, q, T.ramp(nb * L, 1, L)]
                                    )
                    for lane in range(L):
                        if nb * L + lane < o:
                            yf[((nb * L + lane) * oh + i) * ow + j] = acc[lane]

    return fconv2d
