"""The content-addressed compile cache behind ``edgec compile --cache-dir``.

A compile's key hashes everything its output depends on: the bytes of the model file (every file of a
model folder, and an ONNX model's external-data siblings), the calibration file's bytes, the normalized
target and pipeline specs, input shapes, seed, verification settings, edgec's version and the versions of
the libraries and plugins that shape artifacts. A hit copies the stored output directory (artifact,
``manifest.json``, ``report.html``) into place without importing the model; outputs are byte-identical
for identical inputs, so a hit is exactly what a fresh compile would write.

Where: ``--cache-dir``, else ``$EDGEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgec/artifacts``
(``~/.cache/edgec/artifacts``). ``--no-cache`` bypasses it. Entries are written atomically (a temporary
folder renamed into place), so concurrent builds never see half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata

LIBRARIES = ("numpy", "onnx", "onnxruntime", "apache-tvm", "openvino", "coremltools", "gguf", "torch",
             "matplotlib", "llama_cpp_python")
VERSION = 1


def default_dir() -> str:
    env = os.environ.get("EDGEC_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgec", "artifacts")


def _hash_path(h, path: str) -> None:
    """Feed a file's bytes, or every file of a folder (sorted, with relative names), into ``h``."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(root, f)
                h.update(os.path.relpath(p, path).encode() + b"\0")
                _hash_file(h, p)
    else:
        _hash_file(h, path)


def _hash_file(h, path: str) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(b"\0")


def _siblings(model_path: str) -> list[str]:
    """Files an ONNX model may load beside itself (external data): every other regular file in its folder
    that is not itself a model. Conservative: a change to any of them invalidates the entry."""
    if not model_path.lower().endswith(".onnx"):
        return []
    d = os.path.dirname(os.path.abspath(model_path))
    try:
        import onnx
        proto = onnx.load(model_path, load_external_data=False)
    except Exception:  # noqa: BLE001 - an unreadable model is the frontend's error to report, uncached
        return []
    locs = set()
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                locs.add(e.value)
    return [os.path.join(d, p) for p in sorted(locs) if os.path.isfile(os.path.join(d, p))]


def key(model_path: str, calib: str | None, options: dict) -> str:
    """The content address of a compile (sha256 hex)."""
    from . import __version__
    from .host import host
    h = hashlib.sha256()
    libs = {}
    for lib in LIBRARIES:
        try:
            libs[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            libs[lib] = None
    plugins = sorted((p.name, p.distribution, p.version) for p in host().plugins)
    h.update(json.dumps({"v": VERSION, "edgec": __version__, "libs": libs, "plugins": plugins, **options},
                        sort_keys=True, default=str).encode())
    h.update(b"\0model\0")
    _hash_path(h, model_path)
    for s in _siblings(model_path):
        h.update(os.path.basename(s).encode())
        _hash_file(h, s)
    if calib and os.path.exists(calib):
        h.update(b"\0calib\0")
        _hash_path(h, calib)
    return h.hexdigest()


def entry(cache_dir: str, k: str) -> str:
    return os.path.join(cache_dir, k[:2], k)


def lookup(cache_dir: str, k: str) -> str | None:
    e = entry(cache_dir, k)
    return e if os.path.isfile(os.path.join(e, "manifest.json")) else None


def store(cache_dir: str, k: str, out_dir: str) -> None:
    """Copy a finished output directory into the cache (atomically; a failure to cache is not an error)."""
    e = entry(cache_dir, k)
    if os.path.exists(e):
        return
    try:
        os.makedirs(os.path.dirname(e), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(e))
        shutil.copytree(out_dir, os.path.join(tmp, "d"), symlinks=True)
        try:
            os.rename(os.path.join(tmp, "d"), e)
        except OSError:
            pass  # another process stored it first
        shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass
