"""Calibration data (``--calib``): what quantization passes observe activations on.

Accepted forms:

* ``data.npz``: arrays named after the model's inputs, shaped ``[N, *input_shape]`` (N samples) or
  exactly ``input_shape`` (one sample);
* a folder of ``.npz`` files (each as above) or, for single-input models, ``.npy`` files;
* ``random``: seeded random inputs, with a warning (quantization calibrated on noise is poor);
* a text file (``.txt``) for language models, tokenized with the model's own tokenizer and cut into
  ``max_samples`` windows of ``seq_len`` tokens at seeded offsets;
* chat or tool-use transcripts (``.jsonl``) for language models: one conversation per line, ``{"messages": [...]}``
  with optionally ``"tools": [...]`` (OpenAI form), each rendered with the model's own chat template as it would see
  it when deployed (tools as the template takes them, or in SmolLM2-Instruct's tool system message:
  :mod:`edgec.api.toolcalls`), the conversations' tokens then cut into windows as text is.

Sampling is deterministic: with more samples than ``max_samples``, a seeded choice is taken. Names,
shapes and dtypes are checked against the model's inputs, and every mismatch is reported at once.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
import zipfile
from typing import cast

import numpy as np

from .errors import BadInputError, UnsupportedError, UsageError
from .ir import DType, Model, random_inputs


class CalibrationWarning(UserWarning):
    pass


@dataclasses.dataclass
class CalibrationSet:
    """A list of feed dicts (one model run each) plus where they came from."""

    samples: list[dict[str, np.ndarray]]
    source: str

    def __len__(self) -> int:
        return len(self.samples)


def _split(model: Model, arrays: dict[str, np.ndarray], where: str) -> list[dict[str, np.ndarray]]:
    inputs = {v.name: v for v in model.graph.inputs}
    problems = []
    missing = sorted(set(inputs) - set(arrays))
    extra = sorted(set(arrays) - set(inputs))
    if missing:
        problems.append(f"missing inputs {missing}")
    if extra:
        problems.append(f"unknown arrays {extra} (the model's inputs are {sorted(inputs)})")
    counts = {}
    for name, v in inputs.items():
        if name not in arrays:
            continue
        a = arrays[name]
        shape = v.static_shape
        vdt = cast(DType, v.dtype)  # graph inputs are typed
        if a.dtype != vdt.numpy and not (a.dtype.kind == vdt.numpy.kind and vdt.is_float):
            problems.append(f"{name}: dtype {a.dtype} does not match the model's {vdt.short}")
        if shape is None:
            counts[name] = a.shape[0] if a.ndim else 1
        elif tuple(a.shape) == shape:
            counts[name] = 1
            arrays[name] = a[None]
        elif tuple(a.shape[1:]) == shape:
            counts[name] = a.shape[0]
        else:
            problems.append(
                f"{name}: shape {list(a.shape)} is neither {list(shape)} nor [N, {', '.join(map(str, shape))}]"
            )
    if not problems and len(set(counts.values())) > 1:
        problems.append(f"inputs hold different sample counts {counts}")
    if problems:
        raise BadInputError(
            f"calibration data {where} does not fit the model:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    n = next(iter(counts.values())) if counts else 0
    return [
        {k: np.ascontiguousarray(arrays[k][i]).astype(cast(DType, inputs[k].dtype).numpy, copy=False) for k in inputs}
        for i in range(n)
    ]


def _npy_bytes(f) -> int:
    """Bytes an .npy stream declares in its header (the array is not read)."""
    version = np.lib.format.read_magic(f)
    shape, _, dtype = (
        np.lib.format.read_array_header_1_0(f) if version == (1, 0) else np.lib.format.read_array_header_2_0(f)
    )
    return int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize


def declared_bytes(path: str) -> int:
    """Bytes the arrays of a .npz or .npy file declare, from their headers alone: a small compressed file
    can declare gigabytes."""
    try:
        if path.endswith(".npz"):
            with zipfile.ZipFile(path) as z:
                total = 0
                for info in z.infolist():
                    with z.open(info) as f:
                        total += _npy_bytes(f)
                return total
        with open(path, "rb") as f:
            return _npy_bytes(f)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        kind = "npz" if path.endswith(".npz") else "npy"
        raise BadInputError(f"calibration file {path}: not a readable .{kind} ({e})") from None


def _check_budget(paths: list[str]) -> None:
    from .ir.budget import over_budget

    total = sum(declared_bytes(p) for p in paths)
    msg = over_budget(
        f"loading the calibration data ({len(paths)} file{'s' if len(paths) != 1 else ''})",
        {"samples": total},
        fix="use fewer or smaller samples",
    )
    if msg:
        raise BadInputError(msg)


def _read_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise BadInputError(f"calibration file {path}: not a readable .npz ({e})") from None


def text_samples(path: str, model: Model, *, seed: int = 0, count: int = 32, seq_len: int = 512) -> list[dict]:
    """``count`` windows of ``seq_len`` tokens from a text file, tokenized with the model's own tokenizer,
    at seeded random offsets (non-overlapping when the text is long enough)."""
    from .api.tokenizer import tokenizer_for

    _check_llm_input(path, model)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"calibration text {path}: cannot read it as UTF-8 ({e})") from None
    ids = np.array(tokenizer_for(model).encode(text, add_bos=False), np.int64)
    return _windows(ids, path, model, seed=seed, count=count, seq_len=seq_len)


def chat_samples(path: str, model: Model, *, seed: int = 0, count: int = 32, seq_len: int = 512) -> list[dict]:
    """``count`` windows of ``seq_len`` tokens from chat / tool-use transcripts (JSON Lines of ``{"messages": [...],
    "tools": [...]}``), each conversation rendered with the model's chat template (no generation prompt: the
    transcript holds the replies) and tokenized with its control tokens; the conversations follow one another."""
    from .api.tokenizer import tokenizer_for
    from .api.toolcalls import encode_prompt, json_lines, parse_transcript, renderer_for

    _check_llm_input(path, model)
    label = f"calibration transcripts {path}"
    lines = list(json_lines(path, label, BadInputError))  # a malformed file fails before the tokenizer loads
    tok = tokenizer_for(model)
    render = renderer_for(tok)
    ids: list[int] = []
    for no, obj in lines:
        msgs, tools = parse_transcript(obj, f"{label}, line {no}", BadInputError)
        try:
            text = render.render(msgs, tools, add_generation_prompt=False).text
        except UsageError as e:
            raise BadInputError(f"{label}, line {no}: {e}") from None
        ids += encode_prompt(tok, text)
    return _windows(np.array(ids, np.int64), path, model, seed=seed, count=count, seq_len=seq_len)


def _check_llm_input(path: str, model: Model) -> None:
    if [v.name for v in model.graph.inputs] != ["input_ids"]:
        raise UnsupportedError(
            f"{path}: text calibration needs a language model taking input_ids; this model "
            f"takes {[v.name for v in model.graph.inputs]}"
        )


def _windows(ids: np.ndarray, path: str, model: Model, *, seed: int, count: int, seq_len: int) -> list[dict]:
    """``count`` windows of ``seq_len`` tokens of ``ids`` at seeded offsets (non-overlapping when long enough)."""
    if ids.size < 2:
        raise BadInputError(f"calibration text {path} holds {ids.size} tokens; it needs at least 2")
    from .api.llm import LLMConfig

    cfg = LLMConfig.from_model(model)
    if cfg is not None:  # windows never longer than the model's context (its rotary tables end there)
        seq_len = min(seq_len, cfg.context_length)
    seq_len = min(seq_len, int(ids.size))
    slots = ids.size // seq_len
    rng = np.random.default_rng(seed)
    if slots >= count:
        starts = np.sort(rng.choice(slots, count, replace=False)) * seq_len
    else:
        starts = np.sort(rng.integers(0, ids.size - seq_len + 1, size=count))
    return [{"input_ids": ids[s : s + seq_len][None]} for s in starts]


def load_calibration(
    spec: str, model: Model, *, seed: int = 0, max_samples: int = 32, random_samples: int = 8, seq_len: int = 512
) -> CalibrationSet:
    """Load calibration samples for ``model`` from ``spec`` (see the module docstring)."""
    if spec == "random":
        warnings.warn(
            "--calib random: calibrating on random inputs; quantization quality will be poor. "
            "Pass real samples (.npz or a folder) for production models.",
            CalibrationWarning,
            stacklevel=2,
        )
        return CalibrationSet([random_inputs(model, seed=seed + i) for i in range(random_samples)], "random")
    if not os.path.exists(spec):
        raise BadInputError(
            f"calibration data {spec!r} does not exist (give a .npz, a folder, a .txt, a .jsonl, or 'random')"
        )
    samples: list[dict[str, np.ndarray]] = []
    if os.path.isdir(spec):
        files = sorted(f for f in os.listdir(spec) if f.endswith((".npz", ".npy")))
        if not files:
            raise BadInputError(f"calibration folder {spec} holds no .npz or .npy files")
        _check_budget([os.path.join(spec, f) for f in files])
        for f in files:
            p = os.path.join(spec, f)
            if f.endswith(".npz"):
                samples += _split(model, _read_npz(p), p)
            else:
                if len(model.graph.inputs) != 1:
                    raise BadInputError(
                        f"{p}: .npy samples need a single-input model; this one takes "
                        f"{[v.name for v in model.graph.inputs]} (use .npz files named by input)"
                    )
                try:
                    arr = np.load(p, allow_pickle=False)
                except (OSError, ValueError) as e:
                    raise BadInputError(f"calibration file {p}: not a readable .npy ({e})") from None
                samples += _split(model, {model.graph.inputs[0].name: arr}, p)
    elif spec.endswith(".npz"):
        _check_budget([spec])
        samples = _split(model, _read_npz(spec), spec)
    elif spec.endswith(".txt"):
        samples = text_samples(spec, model, seed=seed, count=max_samples, seq_len=seq_len)
    elif spec.endswith(".jsonl"):
        samples = chat_samples(spec, model, seed=seed, count=max_samples, seq_len=seq_len)
    else:
        raise BadInputError(
            f"calibration data {spec!r}: expected a .npz file, a folder, a .txt file, chat transcripts (.jsonl) or "
            "'random'"
        )
    if not samples:
        raise BadInputError(f"calibration data {spec} holds no samples")
    if len(samples) > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(len(samples), max_samples, replace=False))
        samples = [samples[i] for i in idx]
    return CalibrationSet(samples, spec)
