"""Pre-quantized Hugging Face checkpoints: GPTQ and AWQ weights as edgec QuantizedTensors, never quantized again.

A checkpoint quantized by AutoGPTQ / GPTQModel / optimum (``quantization_config.quant_method = "gptq"``) or AutoAWQ
(``"awq"``, the GEMM layout) stores each quantized Linear as packed integer tensors beside float16 scales. edgec
reads them into the asymmetric grid they define, ``w = (code - zero) * scale`` per group of ``group_size`` input
columns, in float32 (the product of a code difference and a float16 scale is exact there; the libraries' own
float16 dequantization rounds it once more):

* **GPTQ** (``checkpoint_format`` ``gptq``, the default, or ``gptq_v2``): ``qweight`` int32 ``[K * bits / 32, N]``,
  the ``32 / bits`` codes of consecutive input rows in each word, lowest bits first; ``qzeros`` int32
  ``[groups, N * bits / 32]`` packed the same way along the outputs, each stored one less than the zero in the
  ``gptq`` format (read as ``(stored + 1) mod 2**bits``, as AutoGPTQ does), as is in ``gptq_v2``; ``scales``
  float16 ``[groups, N]``; ``g_idx`` int32 ``[K]``, the group of each input row. With ``desc_act`` the groups are
  not contiguous: the input columns are reordered so that they are (the weight's columns, and the Linear's input
  by a Gather of the same permutation: the same products, summed in another order).
* **AWQ** (``version`` ``gemm``): ``qweight`` int32 ``[K, N * bits / 32]`` packing ``32 / bits`` output columns
  per word in AutoAWQ's interleaved order (0, 2, 4, 6, 1, 3, 5, 7); ``qzeros`` int32 ``[groups, N * bits / 32]``
  alike; ``scales`` float16 ``[groups, N]``.

Bit widths 2, 4 and 8 (whole codes per 32-bit word); 3-bit GPTQ packs codes across words and is refused by name,
as are other quantization methods.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ...errors import BadInputError, UnsupportedError
from ...ir import QuantizedTensor

PACKED = ("qweight", "qzeros", "scales", "g_idx")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ: output column AWQ_ORDER[i] of each 8 sits at bits 4i..4i+3


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    method: str  # "gptq" or "awq"
    bits: int
    group_size: int  # -1: one group over the whole input
    v2: bool = False  # gptq_v2: zeros stored as they are


def quant_config(c: dict[str, Any], path: str) -> QuantConfig | None:
    """The checkpoint's ``quantization_config`` (None for a float checkpoint); what edgec cannot read exactly is an
    UnsupportedError naming it."""
    q: Any = c.get("quantization_config")
    if not q:
        return None
    if not isinstance(q, dict):
        raise BadInputError(f"{path}: quantization_config is not a JSON object")
    method = str(q.get("quant_method", "")).lower()
    if method not in ("gptq", "awq"):
        raise UnsupportedError(
            f"{path}: quantization_config.quant_method {method or None!r} is not read (edgec reads gptq and awq "
            "checkpoints; dequantize the model to float16 / float32 safetensors, or quantize with edgec)"
        )
    try:
        bits = int(q["bits"] if "bits" in q else q.get("w_bit", 4))
        group = int(q["group_size"] if "group_size" in q else q.get("q_group_size", 128))
    except (TypeError, ValueError):
        raise BadInputError(f"{path}: quantization_config has a bits or group_size that is not an integer") from None
    if bits not in (2, 4, 8):
        raise UnsupportedError(
            f"{path}: {method} with bits={bits} is not read (2, 4 and 8 bits: whole codes per 32-bit word)"
        )
    if group != -1 and group <= 0:
        raise BadInputError(f"{path}: quantization_config.group_size {group} must be positive or -1")
    if method == "awq":
        if bits != 4:
            raise UnsupportedError(f"{path}: AWQ with bits={bits} is not read (its interleaved packing is 4-bit)")
        version = str(q.get("version", "gemm")).lower()
        if version != "gemm":
            raise UnsupportedError(f"{path}: AWQ version {version!r} is not read (the GEMM layout is)")
        if q.get("zero_point", True) is False:
            raise UnsupportedError(f"{path}: AWQ without zero points is not read")
        return QuantConfig("awq", bits, group)
    fmt = str(q.get("checkpoint_format", "gptq")).lower()
    if fmt not in ("gptq", "gptq_v2"):
        raise UnsupportedError(f"{path}: GPTQ checkpoint_format {fmt!r} is not read (gptq, gptq_v2)")
    return QuantConfig("gptq", bits, group, v2=fmt == "gptq_v2")


def _unpack(words: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """int32 words -> their ``32 / bits`` codes each, lowest bits first, laid out along ``axis`` (int32 codes)."""
    w = np.asarray(words).astype(np.uint32)
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    mask = np.uint32((1 << bits) - 1)
    if axis == 0:  # [R, C] -> [R * per, C]
        return ((w[:, None, :] >> shifts[None, :, None]) & mask).reshape(-1, w.shape[1]).astype(np.int32)
    return ((w[:, :, None] >> shifts[None, None, :]) & mask).reshape(w.shape[0], -1).astype(np.int32)


def _fail(name: str, why: str) -> BadInputError:
    return BadInputError(f"quantized weight {name!r}: {why}")


def _parts(name: str, parts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A packed Linear's qweight, qzeros and (float32) scales, each present and 2-D."""
    for p in ("qweight", "qzeros", "scales"):
        if p not in parts:
            raise _fail(name, f"the checkpoint has no {name}.{p}")
    qw, qz, sc = parts["qweight"], parts["qzeros"], np.asarray(parts["scales"], np.float32)
    if qw.ndim != 2 or qz.ndim != 2 or sc.ndim != 2:
        raise _fail(name, "qweight, qzeros and scales must be 2-D")
    return qw, qz, sc


def _check_fit(name: str, cfg: QuantConfig, qw, qz, sc, k: int, n: int, zeros_cols: int, packs: bool) -> int:
    """The group size (the whole input with -1), once the packed shapes fit K inputs, N outputs and it (qzeros
    ``[groups, zeros_cols]``; ``packs``: N fills whole words)."""
    group = k if cfg.group_size == -1 else cfg.group_size
    if k % group or sc.shape != (k // group, n) or qz.shape != (k // group, zeros_cols) or not packs:
        raise _fail(
            name,
            f"qweight {list(qw.shape)}, qzeros {list(qz.shape)}, scales {list(sc.shape)} do not fit "
            f"{cfg.bits}-bit codes in groups of {group}",
        )
    return group


def _grid(
    name: str, codes: np.ndarray, zeros: np.ndarray, scales: np.ndarray, bits: int, group: int, method: str
) -> QuantizedTensor:
    """``[K, N]`` codes, ``[G, N]`` zeros and scales as the ``[N, K]`` weight's asymmetric group-wise grid."""
    q = QuantizedTensor(
        codes=np.ascontiguousarray(codes.T.astype(np.uint8)),
        bits=bits,
        scheme="asymmetric",
        scales=np.ascontiguousarray(scales.T),
        zero_points=np.ascontiguousarray(zeros.T.astype(np.uint8)),
        axis=0,
        group_size=group,
        group_axis=1,
        method=f"{method} (imported)",
    )
    errs = q.validate()
    if errs:
        raise _fail(name, "; ".join(errs))
    return q


def gptq_tensor(name: str, parts: dict[str, np.ndarray], cfg: QuantConfig) -> tuple[QuantizedTensor, np.ndarray | None]:
    """A GPTQ Linear (``name``: its prefix in the checkpoint, for errors) as ``[N, K]`` codes on its grid, and the
    input permutation that makes act-order groups contiguous (None when they already are)."""
    bits = cfg.bits
    per = 32 // bits
    qw, qz, sc = _parts(name, parts)
    k, n = qw.shape[0] * per, qw.shape[1]
    group = _check_fit(name, cfg, qw, qz, sc, k, n, n // per, n % per == 0)
    codes = _unpack(qw, bits, 0)  # [K, N]
    zeros = _unpack(qz, bits, 1)  # [G, N]
    if not cfg.v2:
        zeros = (zeros + 1) & ((1 << bits) - 1)
    g_idx = parts.get("g_idx")
    perm = None
    if g_idx is not None:
        g_idx = np.asarray(g_idx).astype(np.int64).reshape(-1)
        if g_idx.shape != (k,) or g_idx.min() < 0 or g_idx.max() >= k // group:
            raise _fail(name, f"g_idx of shape {list(g_idx.shape)} does not name a group for each of {k} inputs")
        if not np.all(np.bincount(g_idx, minlength=k // group) == group):
            raise _fail(name, f"g_idx does not put {group} inputs in every group")
        if not np.array_equal(g_idx, np.arange(k) // group):
            perm = np.argsort(g_idx, kind="stable")
            codes = codes[perm]
    return _grid(name, codes, zeros, sc, bits, group, "gptq"), perm


def awq_tensor(name: str, parts: dict[str, np.ndarray], cfg: QuantConfig) -> QuantizedTensor:
    """An AWQ (GEMM layout) Linear as ``[N, K]`` codes on its grid."""
    bits = cfg.bits
    per = 32 // bits
    qw, qz, sc = _parts(name, parts)
    k, n = qw.shape[0], qw.shape[1] * per
    group = _check_fit(name, cfg, qw, qz, sc, k, n, qw.shape[1], True)
    # word slot i of each group of 8 holds output column AWQ_ORDER[i]: put each slot's code back in its column
    back = np.empty(per, np.int64)
    back[list(AWQ_ORDER)] = np.arange(per)
    order = (np.arange(n).reshape(-1, per)[:, back]).reshape(-1)  # column j reads unpacked slot order[j]

    def columns(words: np.ndarray) -> np.ndarray:
        return _unpack(words, bits, 1)[:, order]

    codes, zeros = columns(qw), columns(qz)  # [K, N], [G, N]
    return _grid(name, codes, zeros, sc, bits, group, "awq")
