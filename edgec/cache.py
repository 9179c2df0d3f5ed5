"""The content-addressed compile cache behind ``edgec compile --cache-dir``.

A compile's key hashes everything its output depends on: the bytes of the model file (every file of a
model folder, and the external-data files an ONNX model names), the calibration file's bytes, the target
and pipeline specs as given (so a hit needs no plugin loaded; a respelled spec is a miss, never a wrong
hit), input shapes, seed, verification settings, edgec's version and the size and date of its source files,
and every installed distribution's name and version (libraries and plugins). A hit copies the stored
output directory (artifact, ``manifest.json``, ``report.html``) into place without importing the model or
any plugin; outputs are byte-identical for identical inputs, so a hit is exactly what a fresh compile
would write.

Where: ``--cache-dir``, else ``$EDGEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgec/artifacts``
(``~/.cache/edgec/artifacts``). ``--no-cache`` bypasses it. Entries are written atomically (a temporary
folder renamed into place), so concurrent builds never see half an entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
import sys
from typing import Any

from .errors import BadInputError

VERSION = 1


@dataclasses.dataclass
class CompileResult:
    output_dir: str
    manifest: dict[str, Any]
    timings: str = ""                     # --time-passes table
    timings_s: dict[str, float] = dataclasses.field(default_factory=dict)  # import / passes / emit wall seconds
    cached: bool = False                  # served from the compile cache (nothing was recomputed)
    cache_key: str | None = None


def default_output(src_path: str | None, target_name: str) -> str:
    """MODEL.TARGET beside the current directory (``out.TARGET`` for an in-memory model)."""
    return os.path.splitext(os.path.basename(src_path))[0] + f".{target_name}" if src_path else f"out.{target_name}"


def replace_dir(tmp: str, output: str) -> None:
    """Move a finished output directory into place; an existing output is replaced only once the new one is
    complete."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private; the output gets the usual permissions
    if os.path.exists(output):
        if not os.path.isdir(output):
            raise BadInputError(f"output {output!r} exists and is not a directory")
        old = output + ".old-" + os.path.basename(tmp)
        os.rename(output, old)
        os.rename(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, output)


def serve(model: str, target: str, pipeline: str, output: str | None, *, cache_dir: str | None,
          calib: str | None, input_shapes: Mapping[str, str] | None, verify: bool, tolerance: float,
          cleanup: bool, seed: int, frontend: str | None, eval_text: str | None = None,
          progress: Callable[[str], None] | None = None) -> tuple[str, str, CompileResult | None]:
    """(cache dir, key, the result if this exact compile is cached: its output copied into place)."""
    cdir = cache_dir or default_dir()
    opts = {"target": target, "pipeline": pipeline, "cleanup": cleanup,
            "input_shapes": sorted((input_shapes or {}).items()), "verify": verify, "tolerance": tolerance,
            "seed": seed, "frontend": frontend,
            "calib": None if calib is None else "file" if os.path.exists(calib) else calib,
            "eval_text": eval_text is not None, "source_name": os.path.basename(model)}
    k = key(model, calib, opts, extra=eval_text, cache_dir=cdir)
    hit = lookup(cdir, k)
    if hit is None:
        return cdir, k, None
    output = output or default_output(model, target.split("{")[0].strip())
    if progress:
        progress(f"cached: nothing changed since this exact compile ({k[:16]}); copying {hit}")
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.", dir=parent)
    try:
        # shutil.copy, not copy2: fresh modification times, so make/ninja see the output as new
        shutil.copytree(hit, os.path.join(tmp, "d"), symlinks=True, copy_function=shutil.copy)
        replace_dir(os.path.join(tmp, "d"), output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(output, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    return cdir, k, CompileResult(os.path.abspath(output), manifest, cached=True, cache_key=k)


def default_dir() -> str:
    env = os.environ.get("EDGEC_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgec", "artifacts")


def _hash_path(h, path: str) -> bool:
    """Feed a file's bytes, or every file of a folder (sorted, with relative names), into ``h``; True when
    the bytes contain ``location`` (an ONNX file naming external data)."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(root, f)
                h.update(os.path.relpath(p, path).encode() + b"\0")
                _hash_file(h, p)
        return False
    return _hash_file(h, path)


def _hash_file(h, path: str) -> bool:
    """Feed a file's sha256 into ``h`` (from the stat index when the file is unchanged); True when its bytes
    contain ``location``."""
    digest, found = _file_digest(path)
    h.update(digest.encode() + b"\0")
    return found


# Direct mode (as ccache's): a file whose size, modification and change times, inode and device are
# unchanged has the digest recorded last time; the change time cannot be set back by a program, so an edited
# file is always re-read. The index lives in the cache directory (INDEX_DIR set by key()).
INDEX_FILE = "stat-index.json"
_index: dict | None = None
_index_path: str | None = None
_index_dirty = False


def _signature(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _file_digest(path: str) -> tuple[str, bool]:
    global _index_dirty
    sig = _signature(path)
    ap = os.path.abspath(path)
    if _index is not None and ap in _index and _index[ap][0] == sig:
        return _index[ap][1], _index[ap][2]
    h = hashlib.sha256()
    found, tail = False, b""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
            found = found or b"location" in tail + chunk[:8] or b"location" in chunk
            tail = chunk[-8:]
    if _index is not None:
        _index[ap] = [sig, h.hexdigest(), found]
        _index_dirty = True
    return h.hexdigest(), found


def _load_index(cache_dir: str | None) -> None:
    global _index, _index_path, _index_dirty
    _index_path = os.path.join(cache_dir, INDEX_FILE) if cache_dir else None
    _index, _index_dirty = None, False
    if _index_path is None:
        return
    try:
        with open(_index_path, encoding="utf-8") as f:
            _index = json.load(f)
    except (OSError, ValueError):
        _index = {}
    if not isinstance(_index, dict):
        _index = {}


def _save_index() -> None:
    if not (_index_dirty and _index_path):
        return
    try:
        os.makedirs(os.path.dirname(_index_path), exist_ok=True)
        tmp = f"{_index_path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(dict(list(_index.items())[-4096:]), f)
        os.replace(tmp, _index_path)
    except OSError:
        pass


def _siblings(model_path: str) -> list[str]:
    """The external-data files an ONNX model names (their bytes are part of the model)."""
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


def _environment() -> list:
    """What else shapes an artifact, cheaply (no metadata parsing, no imports): every installed
    distribution's dist-info name (name and version: libraries and plugins alike), the size and mtime of
    every edgec source file (an edited development checkout is a different compiler) and the plugin
    autoload switch."""
    # edgec.host.AUTOLOAD_ENV, spelled out: importing the host (pluggy, package metadata) costs a hit ~15 ms
    AUTOLOAD_ENV = "EDGEC_DISABLE_PLUGIN_AUTOLOAD"
    dists = []
    for d in sys.path:
        try:
            dists += [n for n in os.listdir(d or ".") if n.endswith((".dist-info", ".egg-info"))]
        except OSError:
            continue
    pkg = os.path.dirname(os.path.abspath(__file__))
    roots = {pkg, *(os.path.join(os.path.dirname(pkg), sub) for sub in ("ir", "plugins", "targets"))}
    src = []
    for r in sorted(roots):
        for root, dirs, files in os.walk(r):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for f in sorted(files):
                if f.endswith((".py", ".c")):
                    st = os.stat(os.path.join(root, f))
                    src.append((os.path.relpath(os.path.join(root, f), os.path.dirname(pkg)), st.st_size,
                                st.st_mtime_ns))
    return [sorted(dists), src, os.environ.get(AUTOLOAD_ENV, "")]


_MEMO: dict[str, str] = {}


def key(model_path: str, calib: str | None, options: dict, extra: str | None = None,
        cache_dir: str | None = None) -> str:
    """The content address of a compile (sha256 hex); remembered per process while the files' stat
    signatures stay the same (the CLI asks once before compiling and once inside)."""
    stamp = json.dumps([options, [(p, _signature(p)) for p in (model_path, calib, extra) if p and os.path.isfile(p)]],
                       sort_keys=True, default=str)
    if stamp in _MEMO and not os.path.isdir(model_path):
        return _MEMO[stamp]
    _load_index(cache_dir)
    try:
        _MEMO[stamp] = k = _key(model_path, calib, options, extra)
    finally:
        _save_index()
    return k


def _key(model_path: str, calib: str | None, options: dict, extra: str | None = None) -> str:
    from . import __version__
    h = hashlib.sha256()
    h.update(json.dumps({"v": VERSION, "edgec": __version__, "env": _environment(), **options},
                        sort_keys=True, default=str).encode())
    h.update(b"\0model\0")
    external = _hash_path(h, model_path)
    if external and model_path.lower().endswith(".onnx"):
        for s in _siblings(model_path):
            h.update(os.path.basename(s).encode())
            _hash_file(h, s)
    if calib and os.path.exists(calib):
        h.update(b"\0calib\0")
        _hash_path(h, calib)
    if extra and os.path.exists(extra):
        h.update(b"\0extra\0")
        _hash_path(h, extra)
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
