"""PyTorch frontend: ``torch.export`` programs (``.pt2`` files) and in-memory modules.

The program is lowered through torch's own ONNX exporter (the dynamo-based one, which consumes
``torch.export`` graphs), then imported like any ONNX model.

``.pt2`` files are hostile input, and ``torch.export.load`` is not safe on them: it picks its loader from
what the archive says (a payload config's ``use_pickle`` and ``path_name``, legacy ``data/weights/<model>.pt``
files, the sample inputs), so a crafted archive reaches ``torch.load(weights_only=False)``,
``pickle.loads`` or ``torch._C._pickle_load_obj`` whatever environment variable is set. The program JSON is
not inert either: its symbolic-shape expressions go through ``sympy.sympify`` (``eval``), its node
targets through ``getattr`` chains from ``torch`` (``torch.os.system`` resolves), its pytree specs through
``importlib.import_module`` (enum contexts, ``defaultdict`` factories), its ``guards_code`` through
``exec`` and its graph names into the source code FX generates for the module. edgec therefore never
calls ``torch.export.load``; :func:`load_pt2` reads the archive itself:

* the zip is opened with :mod:`zipfile`; every entry must be one a ``torch.export.save`` archive holds
  (archive format and version, ``models/<model>.json``, the weights and constants payload configs, the raw
  ``weight_<n>`` / ``tensor_<n>`` files they name, the sample inputs, UTF-8 ``extra/`` files); anything else
  (custom or opaque object files, legacy pickled ``.pt`` weights and constants, AOTInductor, ExecuTorch or
  XL-weights payloads, other folders, duplicate names) is refused;
* every payload config entry must be a raw tensor: ``use_pickle`` false, a ``path_name`` of the form
  ``weight_<n>`` / ``tensor_<n>`` (no folders, no ``custom_obj_`` / ``opaque_obj_``), a ``tensor_meta`` with
  integer sizes, strides and offset whose extent fits the file's bytes and the per-tensor limit
  (``EDGEC_MAX_TENSOR_BYTES``); edgec builds the tensors from the bytes (``torch.frombuffer``, ``as_strided``);
* the sample inputs, which torch would ``torch.load``, are never loaded: edgec only checks, without
  unpickling, that they are a torch tensor pickle whose globals are torch's tensor-rebuild functions, and
  hands the deserializer ``None`` (so no input guards are generated either);
* the program is parsed into torch's schema dataclasses and checked before torch's
  ``ExportedProgramDeserializer`` sees it: node targets and operator arguments must be ATen / prims /
  quantized_decomposed operators (not ``aten::save`` or ``aten::from_file``), symbolic-int operators or an
  allow-listed higher-order operator; symbolic expressions may use only integer / float literals, shape
  symbols, arithmetic and the sympy functions torch prints (checked on their Python syntax tree, with small
  exponents); pytree specs may not name enums or ``defaultdict`` factories outside builtins; value, graph
  and argument names must be identifiers and parameter / buffer paths free of quotes (FX pastes them into
  the Python source it generates and execs); custom objects are refused; ``guards_code`` (``exec``) and
  ``source_fn_stack`` metadata (``getattr`` chains) are dropped;
* while torch deserializes, ``torch.load`` and ``pickle.load(s)`` raise (for the loading thread), in case a
  path was missed.

Every refusal is a :class:`~edgec.errors.BadInputError` naming the archive entry or config key.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import re
import sys
import threading
import warnings
import zipfile
from collections.abc import Sequence
from typing import cast

from ...errors import BadInputError, UnsupportedError
from ...frontend import Frontend
from ...ir import Model
from ...ir.limits import max_tensor_bytes
from .onnx import import_proto

OPSET = 18


class TorchFrontend(Frontend):
    name = "torch"
    summary = "PyTorch programs saved with torch.export.save (.pt2)"
    suffixes = (".pt2",)

    def load(self, path: str) -> Model:
        return from_exported_program(load_pt2(path), label=path)


NEVER = "edgec never unpickles model files (unpickling can run code)"


def load_pt2(path: str):
    """Read a ``torch.export.save`` archive into an ``ExportedProgram`` without unpickling anything and
    without letting the program's strings reach ``eval``, ``exec``, ``import`` or arbitrary callables."""
    _torch()
    reader = _Pt2Reader(path)
    try:
        return reader.load()
    finally:
        reader.zip.close()


class _Pt2Reader:
    WEIGHT = re.compile(r"weight_[0-9]+")
    TENSOR = re.compile(r"tensor_[0-9]+")
    METADATA = {
        "archive_format",
        "archive_version",
        "byteorder",
        "version",
        ".data/version",
        ".data/serialization_id",
        ".format_version",
        ".storage_alignment",
    }

    def __init__(self, path: str):
        self.path = path
        self.limit = max_tensor_bytes()
        try:
            self.zip = zipfile.ZipFile(path)
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            raise BadInputError(f"{path}: not a readable torch.export program ({type(e).__name__}: {e})") from None
        files = [i for i in infos if not i.is_dir()]
        if not files:
            raise self.bad("the zip archive is empty")
        self.root = files[0].filename.split("/", 1)[0]
        self.entries: dict[str, zipfile.ZipInfo] = {}
        for info in files:
            name = info.filename
            if not name.startswith(self.root + "/"):
                raise self.refuse(name, "lies outside the archive's folder " + repr(self.root))
            rel = name[len(self.root) + 1 :]
            if rel in self.entries:
                raise self.refuse(name, "appears twice in the archive")
            self.entries[rel] = info
        self.used: set[str] = set()

    # -- errors -----------------------------------------------------------------------------------------

    def bad(self, why: str) -> BadInputError:
        return BadInputError(f"{self.path}: not a readable torch.export program: {why}")

    def refuse(self, entry: str, why: str, pickled: bool = False) -> BadInputError:
        tail = f"; {NEVER}" if pickled else ""
        return BadInputError(f"{self.path}: archive entry {entry!r} {why}{tail}")

    def full(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    # -- reading ------------------------------------------------------------------------------------------

    def read(self, rel: str, limit: int | None = None) -> bytearray:
        info = self.entries[rel]
        limit = self.limit if limit is None else limit
        if info.file_size > limit:
            what = (
                "the per-tensor limit (EDGEC_MAX_TENSOR_BYTES)" if limit == self.limit else "what such an entry holds"
            )
            raise self.refuse(self.full(rel), f"declares {info.file_size:,} bytes, over {what}: {limit:,}")
        buf = bytearray(info.file_size)
        try:
            # cast: ZipFile.open is typed IO[bytes], which lacks readinto; it returns a ZipExtFile (a BufferedIOBase)
            with cast("zipfile.ZipExtFile", self.zip.open(info)) as f:
                n = f.readinto(buf)
                extra = f.read(1)
        except Exception as e:  # noqa: BLE001 - corrupt, encrypted or oddly compressed entries
            raise self.refuse(self.full(rel), f"cannot be read ({type(e).__name__}: {e})") from None
        if n != info.file_size or extra:
            raise self.refuse(self.full(rel), "is shorter or longer than its zip header says")
        self.used.add(rel)
        return buf

    def json(self, rel: str):
        try:
            return json.loads(bytes(self.read(rel)).decode("utf-8"))
        except BadInputError:
            raise
        except (ValueError, RecursionError) as e:
            raise self.refuse(self.full(rel), f"is not valid JSON ({type(e).__name__}: {e})") from None

    # -- the archive --------------------------------------------------------------------------------------

    def load(self):
        from torch.export.pt2_archive.constants import ARCHIVE_FORMAT_VALUE, ARCHIVE_VERSION_VALUE

        if "archive_format" not in self.entries:
            hint = (
                " (a pre-2.8 torch.export zip, whose program torch unpickles: re-save it with a current torch)"
                if "version" in self.entries or "serialized_exported_program.json" in self.entries
                else ""
            )
            raise self.bad(f"no {self.full('archive_format')!r} entry{hint}")
        if bytes(self.read("archive_format", 64)).strip() != ARCHIVE_FORMAT_VALUE.encode():
            raise self.refuse(self.full("archive_format"), f"is not {ARCHIVE_FORMAT_VALUE!r}")
        if "archive_version" not in self.entries:
            raise self.bad(f"no {self.full('archive_version')!r} entry")
        version = bytes(self.read("archive_version", 64)).strip()
        if version != ARCHIVE_VERSION_VALUE.encode():
            raise self.refuse(
                self.full("archive_version"),
                f"says version {version[:20]!r}; edgec reads version {ARCHIVE_VERSION_VALUE}",
            )
        if "byteorder" in self.entries:
            order = bytes(self.read("byteorder", 64)).strip().decode("ascii", "replace")
            if order != sys.byteorder:
                raise self.refuse(self.full("byteorder"), f"says {order!r}; this machine is {sys.byteorder}-endian")
        models = [r for r in self.entries if r.startswith("models/")]
        names = [
            r[len("models/") : -len(".json")] for r in models if r.endswith(".json") and "/" not in r[len("models/") :]
        ]
        if len(models) != 1 or len(names) != 1:
            raise self.bad(f"expected one program (models/<name>.json), found {sorted(models)[:5]}")
        model = names[0]
        self.classify(model)
        state_dict = self.payloads(model, "weights", self.WEIGHT, "weight_<n>")
        constants = self.payloads(model, "constants", self.TENSOR, "tensor_<n>")
        sample = f"data/sample_inputs/{model}.pt"
        if sample in self.entries:
            self.check_sample_inputs(sample)
        for rel in self.entries:
            if rel.startswith("extra/"):  # torch reads extra files as text; neither it nor edgec unpickles them
                data = bytes(self.read(rel))
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    raise self.refuse(
                        self.full(rel),
                        "is not UTF-8 text (extra files are text; this one may be a pickle)",
                        pickled=True,
                    ) from None
                if _looks_pickled(data):
                    raise self.refuse(self.full(rel), "is a pickle that calls Python objects, not text", pickled=True)
        program = self.program(f"models/{model}.json")
        unused = sorted(r for r in self.entries if r not in self.used and r not in self.METADATA)
        if unused:
            raise self.refuse(self.full(unused[0]), "is not referenced by the program's payload configs")
        return self.deserialize(program, state_dict, constants)

    def classify(self, model: str) -> None:
        """Refuse every entry a plain ``torch.export.save`` archive does not have."""
        known = {
            f"models/{model}.json",
            f"data/weights/{model}_weights_config.json",
            f"data/constants/{model}_constants_config.json",
            f"data/sample_inputs/{model}.pt",
        }
        for rel in self.entries:
            base = rel.rsplit("/", 1)[-1]
            full = self.full(rel)
            if rel in known or rel in self.METADATA:
                continue
            if any(p in ("..", ".", "") for p in rel.split("/")) or "\\" in rel or rel.startswith("/"):
                raise self.refuse(full, "has a path that climbs out of or around the archive's folders")
            if "custom_obj_" in rel or "opaque_obj_" in rel:
                raise self.refuse(full, "holds pickled Python objects (custom or opaque constants)", pickled=True)
            if rel.endswith(".pt") or rel.endswith(".pkl") or rel.endswith(".pickle"):
                raise self.refuse(
                    full,
                    "is a pickled payload (legacy weights/constants, sample inputs of "
                    "another program, or a torch.save file)",
                    pickled=True,
                )
            if rel.startswith(("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")):
                raise self.refuse(
                    full,
                    "is a compiled (AOTInductor / ExecuTorch / MTIA) or external-weights "
                    "payload, which edgec does not load (it would run native code or pickles)",
                )
            if rel.startswith("extra/"):
                continue
            if rel.startswith("data/weights/") and self.WEIGHT.fullmatch(rel[len("data/weights/") :]):
                continue
            if rel.startswith("data/constants/") and self.TENSOR.fullmatch(rel[len("data/constants/") :]):
                continue
            raise self.refuse(full, f"is not part of a torch.export.save archive ({base!r} is unexpected)")

    # -- payloads -----------------------------------------------------------------------------------------

    def payloads(self, model: str, kind: str, pattern: re.Pattern, form: str) -> dict:
        import torch

        legacy = f"data/{kind}/{model}.pt"
        if legacy in self.entries:
            raise self.refuse(self.full(legacy), f"holds the {kind} in torch's legacy pickled format", pickled=True)
        rel = f"data/{kind}/{model}_{kind}_config.json"
        if rel not in self.entries:
            raise self.bad(f"no {kind} payload config {self.full(rel)!r}")
        config = self.json(rel)
        entry = self.full(rel)
        if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
            raise self.refuse(entry, "is not a payload config (no 'config' mapping)")
        flat: dict[tuple[str, object], torch.Tensor] = {}
        out = {}
        for key, meta in config["config"].items():
            where = f"archive entry {entry!r}, key {key!r}"

            def no(why: str, pickled: bool = False):
                return BadInputError(f"{self.path}: {where}: {why}" + (f"; {NEVER}" if pickled else ""))

            if not isinstance(meta, dict):
                raise no("is not a payload description")
            _check_fqn(key, no)
            use_pickle = meta.get("use_pickle", False)
            name = meta.get("path_name")
            if use_pickle is not False:
                raise no(
                    f"is a pickled payload (use_pickle: {json.dumps(use_pickle)}, path_name {name!r})", pickled=True
                )
            if not isinstance(name, str):
                raise no("has no path_name")
            if "custom_obj_" in name or "opaque_obj_" in name:
                raise no(f"path_name {name!r} names a pickled Python object", pickled=True)
            if not pattern.fullmatch(name):
                raise no(
                    f"path_name {name!r} is not a raw tensor file ({form} inside data/{kind}/); "
                    "edgec reads only raw tensor bytes",
                    pickled=True,
                )
            record = f"data/{kind}/{name}"
            if record not in self.entries:
                raise no(f"names {self.full(record)!r}, which the archive does not hold")
            dtype, sizes, strides, offset, requires_grad = self.tensor_meta(meta.get("tensor_meta"), no)
            is_param = meta.get("is_param", False)
            if not isinstance(is_param, bool):
                raise no("has a non-boolean is_param")
            numel = math.prod(sizes)
            item = torch.empty((), dtype=dtype).element_size()
            extent = 0 if numel == 0 else offset + sum((s - 1) * t for s, t in zip(sizes, strides)) + 1
            if max(numel, extent) * item > self.limit:
                raise no(
                    f"declares a {sizes} {dtype} tensor of {max(numel, extent) * item:,} bytes, over the "
                    f"per-tensor limit of {self.limit:,} (EDGEC_MAX_TENSOR_BYTES)"
                )
            nbytes = self.entries[record].file_size
            if nbytes % item:
                raise no(f"{self.full(record)!r} holds {nbytes:,} bytes, not a whole number of {dtype} elements")
            if nbytes and nbytes < extent * item:
                raise no(
                    f"declares sizes {sizes}, strides {strides} and offset {offset} ({extent * item:,} "
                    f"bytes of {dtype}) but {self.full(record)!r} holds only {nbytes:,} bytes"
                )
            base = flat.get((record, dtype))
            if base is None:
                if nbytes:
                    try:
                        base = torch.frombuffer(self.read(record), dtype=dtype)
                    except BadInputError:
                        raise
                    except Exception as e:  # noqa: BLE001 - dtypes frombuffer cannot view
                        raise no(f"cannot be read as {dtype} ({type(e).__name__}: {e})") from None
                else:  # torch saves fake or empty tensors as empty records and loads them as zeros
                    self.used.add(record)
                    base = torch.zeros(extent, dtype=dtype)
                flat[(record, dtype)] = base
            t = torch.as_strided(base, sizes, strides, offset)
            if is_param and kind == "weights":
                t = torch.nn.Parameter(t, requires_grad=requires_grad and (dtype.is_floating_point or dtype.is_complex))
            out[key] = t
        return out

    @staticmethod
    def tensor_meta(tm, no):
        from torch._export.serde import schema
        from torch._export.serde.serialize import deserialize_scalar_type

        if not isinstance(tm, dict):
            raise no("has no tensor_meta (a raw tensor needs its dtype, sizes and strides)")

        def ints(v, what):
            if isinstance(v, dict) and set(v) == {"as_int"}:
                v = v["as_int"]
            if type(v) is not int or v < 0 or v >= 1 << 62:
                raise no(f"tensor_meta {what} {json.dumps(v)[:80]} is not a non-negative integer")
            return v

        try:
            dtype = deserialize_scalar_type(schema.ScalarType(tm.get("dtype")))
        except (ValueError, KeyError, TypeError):
            raise no(f"tensor_meta dtype {json.dumps(tm.get('dtype'))[:40]} is not a torch dtype") from None
        if tm.get("layout", schema.Layout.Strided) != schema.Layout.Strided:
            raise no(f"tensor_meta layout {json.dumps(tm.get('layout'))[:40]} is not a strided (dense) tensor")
        sizes, strides = tm.get("sizes"), tm.get("strides")
        if not isinstance(sizes, list) or not isinstance(strides, list) or len(sizes) != len(strides):
            raise no("tensor_meta needs sizes and strides lists of the same length")
        if len(sizes) > 64:
            raise no(f"tensor_meta has {len(sizes)} dimensions")
        sizes = [ints(s, "size") for s in sizes]
        strides = [ints(s, "stride") for s in strides]
        offset = ints(tm.get("storage_offset", 0), "storage_offset")
        return dtype, sizes, strides, offset, tm.get("requires_grad") is True

    # -- sample inputs ------------------------------------------------------------------------------------

    SAMPLE_GLOBALS = {
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("collections", "OrderedDict"),
        ("torch", "Size"),
        ("torch", "device"),
    }

    def check_sample_inputs(self, rel: str) -> None:
        """torch would ``torch.load`` the sample inputs; edgec never loads them. It only checks, by reading
        the pickle's opcodes (nothing runs), that they are the tensor pickle ``torch.export.save`` writes."""
        import pickletools

        import torch

        full = self.full(rel)
        info = self.entries[rel]
        if info.file_size > self.limit:
            raise self.refuse(full, "is over the per-tensor limit")
        self.used.add(rel)
        try:
            with self.zip.open(info) as f, zipfile.ZipFile(f) as inner:
                pkls = [i for i in inner.infolist() if i.filename.endswith(".pkl")]
                if len(pkls) != 1 or pkls[0].file_size > 64 << 20:
                    raise self.refuse(
                        full, "is not a torch.save tensor file (expected one small data.pkl)", pickled=True
                    )
                data = inner.read(pkls[0])
        except BadInputError:
            raise
        except Exception as e:  # noqa: BLE001 - not a zip (a raw pickle), or a corrupt one
            raise self.refuse(
                full, f"is not a torch.save tensor file ({type(e).__name__}: {e})", pickled=True
            ) from None
        try:
            for op, arg, _ in pickletools.genops(data):
                if op.name in ("STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"):
                    raise self.refuse(
                        full, f"uses pickle opcode {op.name}, which can call arbitrary Python", pickled=True
                    )
                if op.name == "GLOBAL":
                    module, _, name = str(arg).partition(" ")
                    ok = (
                        (module, name) in self.SAMPLE_GLOBALS
                        or module == "torch"
                        and (
                            name.endswith("Storage")
                            and isinstance(getattr(torch, name, None), type)
                            or isinstance(getattr(torch, name, None), torch.dtype)
                        )
                    )
                    if not ok:
                        raise self.refuse(
                            full, f"pickles a reference to {module}.{name}, not only tensors", pickled=True
                        )
        except BadInputError:
            raise
        except Exception as e:  # noqa: BLE001 - a malformed pickle stream
            raise self.refuse(full, f"is not a valid pickle stream ({type(e).__name__}: {e})", pickled=True) from None

    # -- the program --------------------------------------------------------------------------------------

    def program(self, rel: str):
        from torch._export.serde import schema
        from torch._export.serde.serialize import _dict_to_dataclass

        raw = self.json(rel)
        full = self.full(rel)
        if not isinstance(raw, dict):
            raise self.refuse(full, "is not a serialized ExportedProgram")
        try:
            program = _dict_to_dataclass(schema.ExportedProgram, raw)
        except RecursionError:
            raise self.refuse(full, "is nested too deeply") from None
        except Exception as e:  # noqa: BLE001 - any malformed field
            raise self.refuse(
                full,
                f"is not a serialized ExportedProgram ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200] if str(e) else ''})",
            ) from None
        _ProgramCheck(f"{self.path}: archive entry {full!r}").run(program)
        program.guards_code = []  # Python source torch would exec(); edgec checks no input guards
        return program

    def deserialize(self, program, state_dict: dict, constants: dict):
        from torch._export.serde.serialize import ExportedProgramDeserializer

        try:
            with warnings.catch_warnings(), _no_unpickling(self.path):
                warnings.simplefilter("ignore")
                return ExportedProgramDeserializer().deserialize(program, state_dict, constants, None)
        except BadInputError:
            raise
        except RecursionError:
            raise self.bad("the program is nested too deeply") from None
        except Exception as e:  # noqa: BLE001 - torch's deserializer raises many kinds of errors
            raise self.bad(
                f"torch could not rebuild the program ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:300] if str(e) else ''})"
            ) from None


def _check_fqn(name, no) -> None:
    """Parameter, buffer and submodule paths become attribute names FX writes as ``getattr(self, "<part>")``
    into generated code: no quotes, backslashes or control characters."""
    if not isinstance(name, str) or not all(
        part and part.isprintable() and not set(part) & set("\"'\\") for part in name.split(".")
    ):
        raise no(f"name {str(name)[:80]!r} is not a dotted attribute path (torch would paste it into generated code)")


def _looks_pickled(data: bytes) -> bool:
    """Whether ``data`` parses as a whole pickle stream that imports or calls something (read, not run)."""
    import pickletools

    try:
        ops = [op.name for op, _, _ in pickletools.genops(data)]
    except Exception:  # noqa: BLE001 - not a pickle
        return False
    return bool(
        {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"} & set(ops)
    )


_guard_lock = threading.Lock()


@contextlib.contextmanager
def _no_unpickling(label: str):
    """While torch rebuilds a program, ``torch.load`` and ``pickle.load(s)`` raise in this thread (other
    threads get the originals): edgec hands torch only tensors and checked JSON, so a call is a missed path."""
    import pickle

    import torch

    me = threading.get_ident()
    targets = [(torch, "load"), (torch.serialization, "load"), (pickle, "load"), (pickle, "loads")]

    def guard(original, name):
        def refuse(*args, **kwargs):
            if threading.get_ident() != me:
                return original(*args, **kwargs)
            raise BadInputError(f"{label}: the program asked torch to unpickle data ({name}); {NEVER}")

        refuse.__wrapped__ = original
        return refuse

    with _guard_lock:
        saved = [(obj, attr, getattr(obj, attr)) for obj, attr in targets]
        for obj, attr, original in saved:
            setattr(obj, attr, guard(original, f"{obj.__name__}.{attr}"))
        try:
            yield
        finally:
            for obj, attr, original in saved:
                setattr(obj, attr, original)


class _ProgramCheck:
    """Checks a parsed ``schema.ExportedProgram`` for every string torch would turn into code."""

    NAMESPACES = ("aten", "prims", "quantized_decomposed")
    HIGHER_ORDER = frozenset(
        {
            "cond",
            "while_loop",
            "map_impl",
            "scan",
            "associative_scan",
            "wrap_with_set_grad_enabled",
            "wrap_with_autocast",
            "invoke_subgraph",
            "auto_functionalized",
            "auto_functionalized_v2",
            "with_effects",
            "out_dtype",
            "hints_wrapper",
            "flex_attention",
        }
    )
    IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

    def __init__(self, where: str):
        self.where = where

    def no(self, why: str) -> BadInputError:
        return BadInputError(f"{self.where}: {why}")

    def run(self, program) -> None:
        import dataclasses

        from torch._export.serde import schema
        from torch._export.serde.union import _Union

        todo = [program]
        while todo:
            o = todo.pop()
            if isinstance(o, (list, tuple)):
                todo.extend(o)
            elif isinstance(o, dict):
                todo.extend(o.values())
            elif isinstance(o, _Union):
                if isinstance(o, schema.Argument) and o.type == "as_operator":
                    self.operator(o.value)
                if (
                    isinstance(o, (schema.SymIntArgument, schema.SymFloatArgument, schema.SymBoolArgument))
                    and o.type == "as_name"
                ):
                    self.identifier(o.value, "symbolic value")
                if (
                    isinstance(o, schema.SymExprHint)
                    and o.type == "as_int"
                    and (type(o.value) is not int or abs(o.value) >= 1 << 63)
                ):
                    raise self.no(f"symbolic hint {str(o.value)[:40]} is not a 64-bit integer")
                if isinstance(o, schema.InputSpec) and o.type == "custom_obj":
                    raise self.no("the program takes a custom (pickled) object as input; " + NEVER)
                todo.append(o.value)
            elif dataclasses.is_dataclass(o) and not isinstance(o, type):
                if isinstance(o, schema.CustomObjArgument):
                    raise self.no(
                        f"the program uses custom object {o.name!r} ({o.class_fqn}), which torch "
                        f"would unpickle; {NEVER}"
                    )
                if isinstance(o, (schema.Node, schema.TensorArgument, schema.TokenArgument, schema.GraphArgument)):
                    self.identifier(o.name, type(o).__name__)
                if isinstance(o, schema.Node):
                    self.operator(o.target)
                    # metadata torch resolves by getattr chains from torch; edgec does not need it
                    if isinstance(o.metadata, dict):
                        o.metadata.pop("source_fn_stack", None)
                elif isinstance(o, schema.SymExpr):
                    _check_sym_expr(o.expr_str, self.no)
                elif isinstance(o, schema.ModuleCallSignature):
                    for spec in (o.in_spec, o.out_spec):
                        self.treespec(spec)
                    for name in o.forward_arg_names or []:
                        self.identifier(name, "forward argument")
                elif isinstance(o, schema.ModuleCallEntry) and o.fqn:
                    _check_fqn(o.fqn, self.no)
                for field in ("parameter_name", "buffer_name", "tensor_constant_name", "user_input_name"):
                    if isinstance(getattr(o, field, None), str):
                        _check_fqn(getattr(o, field), self.no)
                todo.extend(getattr(o, f.name) for f in dataclasses.fields(o))

    def identifier(self, name, what: str) -> None:
        """Names FX pastes into the Python source it generates and execs (``def forward(self, <names>)``,
        ``getattr(self, "<graph>")``) must be plain identifiers."""
        import keyword

        if name is not None and not (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)):
            raise self.no(
                f"{what} name {str(name)[:80]!r} is not a Python identifier (torch would paste it into generated code)"
            )

    def operator(self, target) -> None:
        import torch
        from torch._export.serde.serialize import _SYM_OPS

        if not isinstance(target, str):
            raise self.no(f"operator {target!r} is not a name")
        if target in {f"{f.__module__}.{f.__name__}" for f in _SYM_OPS}:
            return
        parts = target.split(".")
        op = None
        # getattr only walks names here; the type checks below decide (aten has dunder ops: __and__.Tensor)
        if parts[:2] == ["torch", "ops"] and all(self.IDENT.fullmatch(p) for p in parts[2:]):
            try:
                if len(parts) == 4 and parts[2] == "higher_order" and parts[3] in self.HIGHER_ORDER:
                    op = getattr(torch.ops.higher_order, parts[3])
                    op = op if isinstance(op, torch._ops.HigherOrderOperator) else None
                elif len(parts) == 5 and parts[2] in self.NAMESPACES:
                    op = getattr(getattr(getattr(torch.ops, parts[2]), parts[3]), parts[4])
                    if not isinstance(op, torch._ops.OpOverload) or any(
                        a.name == "filename" for a in op._schema.arguments
                    ):
                        op = None
            except (AttributeError, RuntimeError):
                op = None
        if op is None:
            raise self.no(
                f"the program calls {target[:200]!r}, which is not an ATen, prims or "
                "quantized_decomposed operator, a symbolic-int operator or an allowed higher-order "
                "operator (torch would resolve it by getattr and call it)"
            )

    def treespec(self, spec) -> None:
        if not isinstance(spec, str):
            raise self.no("a pytree spec is not a string")
        try:
            protocol, root = json.loads(spec)
        except (ValueError, TypeError, RecursionError):
            raise self.no(f"pytree spec {spec[:100]!r} is not valid") from None
        if protocol != 1:
            raise self.no(f"pytree spec protocol {protocol!r} is not 1")
        todo = [root]
        while todo:
            node = todo.pop()
            if not isinstance(node, dict) or not isinstance(node.get("children_spec", []), list):
                raise self.no("a pytree spec node is malformed")
            typ, ctx = node.get("type"), node.get("context")
            todo.extend(node.get("children_spec", []))
            if typ == "collections.defaultdict":
                if not (
                    isinstance(ctx, dict)
                    and ctx.get("default_factory_module") == "builtins"
                    and ctx.get("default_factory_name")
                    in ("list", "dict", "set", "int", "float", "str", "tuple", "bool")
                ):
                    raise self.no("a pytree spec names a defaultdict factory outside builtins (torch would import it)")
                ctx = json.dumps(ctx.get("dict_context"))
            if isinstance(ctx, str):
                try:
                    values = [json.loads(ctx)]
                except (ValueError, RecursionError):
                    values = []  # torch would fail on it too
                while values:
                    v = values.pop()
                    if isinstance(v, dict):
                        if "__enum__" in v:
                            raise self.no("a pytree spec names an enum (torch would import its module)")
                        values.extend(v.values())
                    elif isinstance(v, list):
                        values.extend(v)


_SYMPY_FUNCTIONS = frozenset(
    {
        # torch.utils._sympy.functions, as GraphModuleDeserializer maps them
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "Mod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "LShift",
        "RShift",
        "PowByNatural",
        "FloatPow",
        "FloatTrueDiv",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
        # sympy names in torch's srepr() of shape expressions (and in the older str() form)
        "Symbol",
        "Integer",
        "Rational",
        "Float",
        "Add",
        "Mul",
        "Pow",
        "Max",
        "Min",
        "Abs",
        "floor",
        "ceiling",
        "sqrt",
        "Equality",
        "Unequality",
        "StrictLessThan",
        "LessThan",
        "StrictGreaterThan",
        "GreaterThan",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "And",
        "Or",
        "Not",
        "Xor",
        "Piecewise",
        "ExprCondPair",
        "ITE",
        "true",
        "false",
        "oo",
        "zoo",
        "nan",
        "I",
        "pi",
        "E",
    }
)
_POWERS = {"Pow", "PowByNatural", "FloatPow", "LShift", "RShift", "RoundDecimal"}
_SYMBOL = re.compile(r"[a-z]+[0-9]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,4})?|[-+]?inf|nan")
_MAX_EXPR = 65536
_sympy_globals: frozenset[str] | None = None


def _sympy_namespace() -> frozenset[str]:
    """Names ``sympy.parse_expr`` resolves instead of making symbols (sympy's and the builtins)."""
    global _sympy_globals
    if _sympy_globals is None:
        import builtins

        namespace: dict = {}
        exec("from sympy import *", namespace)  # noqa: S102 - a fixed import, to list sympy's names
        _sympy_globals = frozenset(namespace) | frozenset(vars(builtins))
    return _sympy_globals


def _check_sym_expr(expr, no) -> None:
    """``expr`` reaches ``sympy.sympify`` (``eval``, with the builtins in scope). Accept only what torch
    writes: arithmetic on numbers and shape symbols in the ``srepr`` form (``Symbol('s0', integer=True)``,
    ``Integer(2)``, ``Float('0.5', precision=53)``) or the ``str`` form, the sympy functions torch prints, and
    small literal exponents (so nothing computes a huge number)."""
    if not isinstance(expr, str) or not expr.isascii() or len(expr) > _MAX_EXPR:
        raise no(f"symbolic expression {str(expr)[:100]!r} is not a short ASCII string")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise no(f"symbolic expression {expr[:100]!r} does not parse") from None
    namespace = _sympy_namespace()
    strings: set[int] = set()  # the string constants a Symbol(...) or Float(...) call may take
    power = 1

    def literal(node) -> int | None:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            node = node.operand
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("Integer", "Rational")
            and node.args
        ):
            node = node.args[0]
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
                node = node.operand
        if isinstance(node, ast.Constant) and type(node.value) is int and node.value <= 64:
            return max(node.value, 1)
        return None

    def refuse(node):
        what = (
            f"name {node.id!r}"
            if isinstance(node, ast.Name)
            else f"a call to {ast.unparse(node.func)[:40]!r}"
            if isinstance(node, ast.Call)
            else f"constant {node.value!r}"[:60]
            if isinstance(node, ast.Constant)
            else type(node).__name__
        )
        return no(
            f"symbolic expression {expr[:100]!r} uses {what}, which edgec does not accept in a shape "
            "expression (torch would eval it)"
        )

    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            ok = (
                type(node.value) in (int, float, bool)
                and (type(node.value) is not int or abs(node.value) < 1 << 64)
                or type(node.value) is str
                and id(node) in strings
            )
        elif isinstance(node, ast.Name):
            ok = node.id in _SYMPY_FUNCTIONS or (_SYMBOL.fullmatch(node.id) is not None and node.id not in namespace)
        elif isinstance(node, ast.keyword):
            ok = True  # checked with its call
        elif isinstance(node, ast.Call):
            f = node.func.id if isinstance(node.func, ast.Name) else None
            ok = f in _SYMPY_FUNCTIONS and not any(isinstance(a, ast.Starred) for a in node.args)
            first = node.args[0] if node.args else None
            if ok and f == "Symbol":
                ok = (
                    len(node.args) == 1
                    and isinstance(first, ast.Constant)
                    and type(first.value) is str
                    and _NAME.fullmatch(first.value) is not None
                    and all(
                        k.arg and isinstance(k.value, ast.Constant) and type(k.value.value) is bool
                        for k in node.keywords
                    )
                )
                strings.add(id(first))
            elif ok and f == "Float":
                ok = (
                    len(node.args) == 1
                    and isinstance(first, ast.Constant)
                    and (
                        type(first.value) is float
                        or type(first.value) is str
                        and _FLOAT.fullmatch(first.value) is not None
                    )
                    and all(
                        k.arg in ("precision", "dps")
                        and isinstance(k.value, ast.Constant)
                        and type(k.value.value) is int
                        and 0 < k.value.value <= 1024
                        for k in node.keywords
                    )
                )
                strings.add(id(first))
            elif ok:
                ok = not node.keywords
            if ok and f in _POWERS:
                k = literal(node.args[1]) if len(node.args) == 2 else None
                ok = k is not None
                power *= k or 1
        elif isinstance(node, ast.BinOp):
            ok = isinstance(
                node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.BitAnd, ast.BitOr, ast.BitXor)
            )
            if isinstance(node.op, (ast.Pow, ast.LShift, ast.RShift)):
                k = literal(node.right)
                ok = k is not None
                power *= k or 1
        else:
            ok = isinstance(
                node,
                (ast.Expression, ast.UnaryOp, ast.Compare, ast.Tuple, ast.Load, ast.operator, ast.unaryop, ast.cmpop),
            ) and not isinstance(node, (ast.Not, ast.Is, ast.IsNot, ast.In, ast.NotIn, ast.MatMult))
        if not ok or power > 1 << 16:
            raise refuse(node)


def _torch():
    try:
        import torch
    except ImportError:
        raise UnsupportedError("the PyTorch frontend needs torch: pip install 'edgec[torch]'") from None
    return torch


def _torch_reason(e: Exception) -> str:
    """The exporter's reason: its last ``<class ...>: message`` line (the first is a generic headline)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    cause = next((ln for ln in reversed(lines) if ln.startswith("<class ")), None)
    return f"{type(e).__name__}: {(cause or (lines[0] if lines else ''))[:400]}"


def from_exported_program(ep, label: str = "<torch program>") -> Model:
    """Import a ``torch.export.ExportedProgram``. Where torch's ONNX exporter fails to decompose the program
    itself (its own table traces ``scaled_dot_product_attention`` with strides that make the model's next
    ``view`` fail: T5's and Swin's sdpa attention), the program is first brought to core ATen by
    ``run_decompositions()`` with torch's default table, and exported from there."""
    torch = _torch()

    def export(program):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.onnx.export(
                program, (), dynamo=True, opset_version=OPSET, verbose=False, optimize=True, external_data=False
            ).model_proto

    try:
        proto = export(ep)
    except Exception as e:  # noqa: BLE001
        first = e
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                core = ep.run_decompositions()
            proto = export(core)
        except Exception:  # noqa: BLE001 - the exporter's own failure is the one worth reporting
            raise UnsupportedError(
                f"{label}: torch's ONNX exporter could not lower the program: {_torch_reason(first)}"
            ) from None
    model = import_proto(proto, None, label)
    model.metadata["source_format"] = "torch"
    return model


def from_module(module, example_inputs: Sequence, input_names: Sequence[str] | None = None) -> Model:
    """Import an ``nn.Module`` by exporting it with ``torch.export`` on ``example_inputs``."""
    torch = _torch()
    module = module.eval()
    try:
        ep = torch.export.export(module, tuple(example_inputs))
    except Exception as e:  # noqa: BLE001
        raise UnsupportedError(
            f"torch.export failed on {type(module).__name__}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    model = from_exported_program(ep, label=type(module).__name__)
    if input_names:
        for v, name in zip(model.graph.inputs, input_names):
            model.graph.rename(v, name)
    return model
