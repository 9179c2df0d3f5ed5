"""Vectorizable exp, erf and tanh for the cpu target's float32 kernels.

TVM's LLVM code generator turns ``exp`` and ``erf`` into calls of the C library's scalar ``expf`` / ``erff``, one
lane at a time: 2.6 and 10.2 ns per element on this machine, so a ViT-B/16's softmaxes and GELUs took a tenth of
its time. Here they are polynomials LLVM vectorizes (0.3 ns per element), written as one expression per element so
that they fuse into the kernel around them (a matmul's GELU epilogue):

- ``exp``: Cephes' expf (range reduction by ln 2, a degree-7 polynomial, the exponent set by bit arithmetic, as
  TVM's own ``fast_exp``). Outside [-87, 88] it is computed as exp(x / 2) squared, so that the results near
  FLT_MAX and the subnormal ones are right (``topi.fast_exp`` gives inf for exp(88.7) and 0 for exp(-100));
  inf, -inf and NaN give inf, 0 and NaN. Within 5.6 ulp (the worst just above 88).
- ``erf``: Eigen's rational approximation on [-4, 4] (as TVM's ``fast_erf``), within 5.5 ulp; NaN stays NaN
  (``topi.fast_erf`` returns 1).
- ``tanh``: TVM's ``fast_tanh`` rational approximation, within 5.3 ulp (TVM's default tanh is off by up to 7059
  ulp near 0); NaN stays NaN.

Each replaces a function compared with a tolerance anyway, as FMA contraction is (see schedule.SplitGemm); the
figures are measured by tests/targets/test_cpu.py against float64 references.
"""

from __future__ import annotations

import math

import tvm

F32 = "float32"


def _f(v: float):
    return tvm.tirx.const(v, F32)


def _exp_core(x):
    """Cephes' expf for |x| <= 88.3 (the exponent n + 127 of 2^n stays a normal float's)."""
    from tvm import tirx

    x = tirx.max(tirx.min(x, _f(88.3762626647950)), _f(-88.3762626647949))
    n = tirx.floor(x * _f(1.44269504088896341) + _f(0.5))
    r = x - n * _f(0.6931471805599453)
    p = _f(1.9875691500e-4)
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = p * r + _f(c)
    y = p * r * r + r + _f(1.0)
    two_n = tirx.reinterpret(F32, tirx.shift_left((n + _f(127.0)).astype("int32"), tirx.const(23, "int32")))
    return two_n * y


def exp(x):
    """e^x of a float32 expression (see the module's docstring)."""
    from tvm import tirx

    half = _exp_core(x * _f(0.5))
    value = tirx.Select(tirx.Or(x > _f(88.0), x < _f(-87.0)), half * half, _exp_core(x))
    return tirx.Select(tirx.isnan(x), x, value)


# Eigen's erf approximation: odd numerator and even denominator polynomial coefficients (x in [-4, 4]).
_ERF_ALPHA = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_BETA = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)


def erf(x):
    """erf(x) of a float32 expression (see the module's docstring)."""
    from tvm import tirx

    c = tirx.max(tirx.min(x, _f(4.0)), _f(-4.0))
    c2 = c * c
    p = _f(_ERF_ALPHA[0])
    for a in _ERF_ALPHA[1:]:
        p = p * c2 + _f(a)
    q = _f(_ERF_BETA[0])
    for b in _ERF_BETA[1:]:
        q = q * c2 + _f(b)
    return tirx.Select(tirx.isnan(x), x, c * p / q)


def _elementwise(fn):
    from tvm import te

    def build(t):
        return te.compute(t.shape, lambda *i: fn(t(*i)), name="fast_math")

    return build


def _softmax(axis: int):
    from tvm import te, topi

    def build(t):
        ax = axis % len(t.shape)

        def row(i):  # the index of i's row statistic (the reduced axis kept, at 0)
            return [0 if d == ax else j for d, j in enumerate(i)]

        m = topi.max(t, axis=ax, keepdims=True)
        e = te.compute(t.shape, lambda *i: exp(t(*i) - m(*row(i))), name="softmax_exp")
        s = topi.sum(e, axis=ax, keepdims=True)
        return te.compute(t.shape, lambda *i: e(*i) / s(*row(i)), name="softmax")

    return build


def _gelu(x):
    # as TVM's own legalization of relax.nn.gelu: x * (0.5 + erf(x / sqrt 2) * 0.5)
    return x * (_f(0.5) + erf(x * _f(0.5**0.5)) * _f(0.5))


def _gelu_tanh(x):
    return _f(0.5) * x * (_f(1.0) + _tanh(_f(math.sqrt(2.0 / math.pi)) * x * (_f(1.0) + _f(0.044715) * x * x)))


def _tanh(x):
    """tanh(x) of a float32 expression: TVM's fast_tanh (a rational approximation on [-9, 9]) written as an
    expression, NaN kept."""
    from tvm import tirx

    c = tirx.max(tirx.min(x, _f(9.0)), _f(-9.0))
    c2 = c * c
    p = _f(-2.76076847742355e-16)
    for a in (
        2.00018790482477e-13,
        -8.60467152213735e-11,
        5.12229709037114e-08,
        1.48572235717979e-05,
        6.37261928875436e-04,
        4.89352455891786e-03,
    ):
        p = p * c2 + _f(a)
    q = _f(1.19825839466702e-06)
    for b in (1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03):
        q = q * c2 + _f(b)
    return tirx.Select(tirx.isnan(x), x, c * p / q)


def _sigmoid(x):
    return _f(1.0) / (_f(1.0) + exp(-x))


def fast_math_pass() -> tvm.transform.Pass:
    """Relax pass: float32 exp, erf, tanh, sigmoid, SiLU, GELU and softmax computed by this module's polynomials
    (other dtypes keep TVM's lowering)."""
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    unary = {
        "relax.exp": exp,
        "relax.erf": erf,
        "relax.tanh": _tanh,
        "relax.sigmoid": _sigmoid,
        "relax.nn.silu": lambda x: x * _sigmoid(x),
        "relax.nn.gelu": _gelu,
        "relax.nn.gelu_tanh": _gelu_tanh,
    }

    @mutator
    class _Fast(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            name = getattr(call.op, "name", "")
            if name not in unary and name != "relax.nn.softmax":
                return call
            ty = call.args[0].ty
            if not isinstance(ty, relax.TensorType) or ty.dtype != F32 or ty.shape is None:
                return call
            if name == "relax.nn.softmax":
                return self.builder_.call_te(_softmax(int(call.attrs.axis)), call.args[0], primfunc_name_hint="softmax")
            return self.builder_.call_te(
                _elementwise(unary[name]), call.args[0], primfunc_name_hint=name.rsplit(".", 1)[-1]
            )

    @tvm.transform.module_pass(opt_level=0, name="EdgecFastMath")
    def _pass(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
        fast = _Fast(mod)
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                fast.builder_.update_func(gv, fast.visit_expr(func))
        return fast.builder_.get()

    return _pass
