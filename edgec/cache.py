"""The content-addressed compile cache behind ``edgec compile --cache-dir``.

A compile's key hashes everything its output depends on: the bytes of the model file (every file of a
model folder, and the external-data files an ONNX model names), the calibration file's bytes, the target
and pipeline specs as given (so a hit needs no plugin loaded; a respelled spec is a miss, never a wrong
hit), input shapes, seed, verification settings, edgec's version and the size and date of its source files,
and every installed distribution's name and version (libraries and plugins). A hit copies the stored
output directory (artifact, ``manifest.json``, ``report.html``) into place without importing the model or
any plugin; outputs are byte-identical for identical inputs, so a hit is exactly what a fresh compile
would write.

Safety:

* **Every hit is checked.** Each entry records the size and sha256 of every file it holds; a hit re-hashes
  the files while copying them, and an entry with a missing, extra, truncated or altered file is evicted
  and the model recompiled (with a warning), never served.
* **Only what the model is made of is read.** Files are hashed only when they are regular files, and only
  as many bytes as they declare (a ``/proc`` file or a FIFO is never read: such a model is not cached).
  External data an ONNX model names is hashed only when it lies inside the model's folder, which is all
  the ONNX frontend reads; a symlink in a model folder that leads outside it is keyed by its target's
  size, dates and inode, never by its contents.
* **Only the cache is ever deleted.** The cache root carries a ``CACHEDIR.TAG`` (the Cache Directory
  Tagging standard); a directory holding anything else is not used as a cache, and ``edgec cache
  --clear`` deletes only entries (``XX/<64 hex digits>`` folders), their temporary folders and the stat
  index, and only under a tagged root.

Where: ``--cache-dir``, else ``$EDGEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgec/artifacts``
(``~/.cache/edgec/artifacts``). ``--no-cache`` bypasses it. Entries are written atomically (a temporary
folder renamed into place), so concurrent builds never see half an entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from .errors import UsageError
from .output import TUNING_DIR, default_cache_dir, read_regular
from .output import (
    _ME,
    _tag,
    abandoned,
    check_output,
    default_output,
    hold,
    make_scratch,  # noqa: F401
    release,
    replace_dir,
)

VERSION = 2  # 2: entries are out/ + sums.json, checked on every hit
TAG_FILE = "CACHEDIR.TAG"
TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by edgec (see https://bford.info/cachedir/).\n"
    "# edgec deletes only its own entries here: XX/<64 hex digits>/ folders, .tmp-* folders in them, and "
    "stat-index.json.\n"
)
SUMS = "sums.json"
OUT = "out"
INDEX_FILE = "stat-index.json"
_SHARD = re.compile(r"[0-9a-f]{2}")
_ENTRY = re.compile(r"[0-9a-f]{64}")


class CacheWarning(UserWarning):
    """Something about the compile cache the user should know (an evicted entry, an unusable directory)."""


@dataclasses.dataclass
class CompileResult:
    output_dir: str
    manifest: dict[str, Any]
    timings: str = ""  # --time-passes table
    timings_s: dict[str, float] = dataclasses.field(default_factory=dict)  # import / passes / emit wall seconds
    cached: bool = False  # served from the compile cache (nothing was recomputed)
    cache_key: str | None = None


def default_dir() -> str:
    return default_cache_dir()


# ------------------------------------------------------------------------------------------------ the root
def is_cache_root(d: str) -> bool:
    """Whether ``d`` carries edgec's own CACHEDIR.TAG (the standard signature line is shared by every tool's
    tag: edgec's second line must be there too)."""
    want = TAG.split("\n", 2)
    try:
        got = (read_regular(os.path.join(d, TAG_FILE), 4096).decode("utf-8", "replace")).split("\n", 2)
    except OSError:
        return False
    return got[:2] == want[:2]


def prepare_root(d: str, create: bool = True) -> bool:
    """Whether ``d`` is (now) an edgec cache. A missing or empty directory, or one laid out as a cache by
    an earlier edgec, gets its tag; a directory holding anything else is never used (or cleared)."""
    if is_cache_root(d):
        return True
    if os.path.lexists(os.path.join(d, TAG_FILE)):  # another tool's cache: never edgec's to use or clear
        if create:
            warnings.warn(
                f"{d} is not used as the compile cache: its {TAG_FILE} was written by another tool; point "
                "--cache-dir or EDGEC_CACHE_DIR at a new folder",
                CacheWarning,
                stacklevel=3,
            )
        return False
    try:
        if not os.path.isdir(d):
            if not create or os.path.lexists(d):
                return False
            os.makedirs(d, exist_ok=True)
        foreign = [
            n
            for n in os.listdir(d)
            if not (
                n in (INDEX_FILE, TAG_FILE)
                or (
                    _SHARD.fullmatch(n) and os.path.isdir(os.path.join(d, n)) and not os.path.islink(os.path.join(d, n))
                )
            )
        ]
        if foreign:
            if not create:
                return False
            warnings.warn(
                f"{d} is not used as the compile cache: it holds files edgec did not write "
                f"({', '.join(sorted(foreign)[:3])}{', ...' if len(foreign) > 3 else ''}) and no "
                f"{TAG_FILE}; point --cache-dir or EDGEC_CACHE_DIR at a new folder",
                CacheWarning,
                stacklevel=3,
            )
            return False
        tmp = os.path.join(d, f".{TAG_FILE}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="ascii") as f:
            f.write(TAG)
        os.replace(tmp, os.path.join(d, TAG_FILE))
        return True
    except OSError:
        return False


def _listdir(d: str) -> list[str]:
    try:
        return sorted(os.listdir(d))
    except OSError:  # removed meanwhile (a concurrent --clear or eviction)
        return []


def _real_dir(p: str) -> bool:
    return not os.path.islink(p) and os.path.isdir(p)


def entries(cache_dir: str) -> list[str]:
    """Paths of the cache's entries, by their layout: ``XX/<64 hex digits>/`` holding ``sums.json`` (or, from
    edgec before it, ``manifest.json``); symlinks are never entries."""
    out: list[str] = []
    for sh in _listdir(cache_dir):
        sp = os.path.join(cache_dir, sh)
        if not _SHARD.fullmatch(sh) or not _real_dir(sp):
            continue
        for e in _listdir(sp):
            ep = os.path.join(sp, e)
            if (
                _ENTRY.fullmatch(e)
                and e.startswith(sh)
                and _real_dir(ep)
                and (os.path.isfile(os.path.join(ep, SUMS)) or os.path.isfile(os.path.join(ep, "manifest.json")))
            ):
                out.append(ep)
    return out


def _tree_bytes(path: str) -> int:
    size = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(root, f)).st_size
    return size


def stats(cache_dir: str) -> tuple[int, int]:
    """(entries, bytes) of the cache."""
    found = entries(cache_dir)
    return len(found), sum(_tree_bytes(e) for e in found)


def _deletable(cache_dir: str) -> bool:
    """Whether ``cache_dir`` exists; a UsageError (nothing deleted) where it is not an edgec cache."""
    if not os.path.lexists(cache_dir):
        return False
    if not prepare_root(cache_dir, create=False):
        raise UsageError(
            f"{cache_dir} is not an edgec compile cache (no {TAG_FILE} of edgec's, and it holds files "
            "edgec did not write); nothing was deleted. Check --cache-dir / EDGEC_CACHE_DIR"
        )
    return True


def clear(cache_dir: str) -> tuple[int, int]:
    """Delete every entry of the cache (and nothing else); (entries, bytes) deleted."""
    if not _deletable(cache_dir):
        return 0, 0
    n, size = stats(cache_dir)
    for e in entries(cache_dir):
        _evict(e)
    for sh in _listdir(cache_dir):
        sp = os.path.join(cache_dir, sh)
        if _SHARD.fullmatch(sh) and _real_dir(sp):
            _sweep_shard(sp)
            with contextlib.suppress(OSError):
                os.rmdir(sp)  # not empty: something else (a live writer's temporary folder) is in it
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(cache_dir, INDEX_FILE))
    return n, size


def tuning_stats(cache_dir: str) -> tuple[int, int]:
    """(tuning databases, bytes) under the cache's ``tuning/`` folder."""
    root = os.path.join(cache_dir, TUNING_DIR)
    found = [p for p in (os.path.join(root, d) for d in _listdir(root)) if _real_dir(p)]
    return len(found), sum(_tree_bytes(p) for p in found)


def clear_tuning(cache_dir: str) -> tuple[int, int]:
    """Delete the cache's tuning databases (searches a later tuned compile will have to run again); (databases,
    bytes) deleted. Refused, like :func:`clear`, for a folder that is not an edgec cache."""
    if not _deletable(cache_dir):
        return 0, 0
    n, size = tuning_stats(cache_dir)
    root = os.path.join(cache_dir, TUNING_DIR)
    for d in _listdir(root):
        p = os.path.join(root, d)
        if _real_dir(p):
            shutil.rmtree(p, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(root)
    return n, size


def _sweep_shard(shard: str) -> None:
    """Remove the temporary folders (``.tmp-PID-START-...``) of writers that are gone."""
    for t in _listdir(shard):
        p = os.path.join(shard, t)
        if t.startswith(".tmp-") and _real_dir(p) and abandoned(p, _tag(t[5:])):
            shutil.rmtree(p, ignore_errors=True)


def _evict(e: str) -> None:
    """Remove an entry atomically (renamed away first, so no reader sees half of it)."""
    gone = os.path.join(os.path.dirname(e), f".tmp-{_ME}-evict-{os.path.basename(e)[:16]}-{os.urandom(4).hex()}")
    try:
        os.rename(e, gone)
    except OSError:
        return
    shutil.rmtree(gone, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- serving
@dataclasses.dataclass(frozen=True)
class Lookup:
    """A compile's output directory, the inputs it must never overwrite, and its place in the cache."""

    output: str
    inputs: tuple[str, ...]
    cache_dir: str | None = None  # None with key: this compile is not cached (no usable cache, an unkeyable input)
    key: str | None = None
    hit: CompileResult | None = None  # the result, its output already copied into place


def lookup_compile(
    model: str | None,
    target: str,
    pipeline: str,
    output: str | None,
    options: Mapping[str, Any],
    *,
    use_cache: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Lookup:
    """The one cache lookup of a compile (``edgec compile`` makes it before the compiler or any plugin loads): the
    output directory (by default beside the model), checked to be edgec's to replace and to hold none of the inputs;
    then, with ``use_cache`` and a model file, the compile served from the cache if this exact one is there.
    ``options``: the compile's keyword options (cache_dir, calib, input_shapes, verify, tolerance, cleanup, seed,
    frontend, eval_text, force, min_cosine, min_top1, bench)."""
    out = os.path.normpath(os.fspath(output)) if output else default_output(model, target.split("{", 1)[0].strip())
    inputs = protected_inputs(out, model, options.get("calib"), options.get("eval_text"))
    check_output(out, inputs, bool(options.get("force", False)))
    if not use_cache or model is None or not os.path.exists(model):
        return Lookup(out, inputs)
    cdir, k, hit = _serve(model, target, pipeline, out, inputs, options, progress)
    return Lookup(out, inputs, cdir, k, hit)


def _serve(
    model: str,
    target: str,
    pipeline: str,
    output: str,
    inputs: tuple[str, ...],
    o: Mapping[str, Any],
    progress: Callable[[str], None] | None,
) -> tuple[str | None, str | None, CompileResult | None]:
    """(cache dir, key, the result if this exact compile is cached: its output copied into place). The
    cache dir and key are None when this compile cannot be cached (no usable cache, an unkeyable input)."""
    cdir = o.get("cache_dir") or default_dir()
    if not prepare_root(cdir):
        return None, None, None
    calib, eval_text = o.get("calib"), o.get("eval_text")
    opts = {
        "target": target,
        "pipeline": pipeline,
        "cleanup": o.get("cleanup", True),
        "input_shapes": sorted((o.get("input_shapes") or {}).items()),
        "verify": o.get("verify", False),
        "tolerance": o.get("tolerance"),
        "seed": o.get("seed", 0),
        "frontend": o.get("frontend"),
        "calib": None if calib is None else "file" if os.path.exists(calib) else calib,
        "eval_text": eval_text is not None,
        "source_name": os.path.basename(model),
        "min_cosine": o.get("min_cosine"),
        "min_top1": o.get("min_top1"),
    }
    if o.get("bench"):  # a compile with --bench has its own entry (its manifest holds the figures)
        opts["bench"] = True
    try:
        k = key(model, calib, opts, extra=eval_text, cache_dir=cdir)
    except Unkeyable:
        return None, None, None
    e = lookup(cdir, k)
    if e is None:
        return cdir, k, None
    if progress:
        progress(f"cached: nothing changed since this exact compile ({k[:16]}); copying {e}")
    tmp = make_scratch(output)
    try:
        problem = _checked_copy(e, os.path.join(tmp, "d"))
        if problem:
            _evict(e)
            warnings.warn(
                f"the compile cache entry {k[:16]} was corrupt ({problem}); it was evicted and the model "
                "is compiled again",
                CacheWarning,
                stacklevel=3,
            )
            return cdir, k, None
        with open(os.path.join(tmp, "d", "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        replace_dir(os.path.join(tmp, "d"), output, force=bool(o.get("force", False)), inputs=inputs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        release(tmp)
    return cdir, k, CompileResult(os.path.abspath(output), manifest, cached=True, cache_key=k)


def protected_inputs(
    output: str, model: str | None, calib: str | None = None, eval_text: str | None = None
) -> tuple[str, ...]:
    """The files a compile reads, which its output must never hold: the model, calibration data, evaluation
    text and, when ``output`` exists (so something would be replaced), an ONNX model's external data files."""
    paths = [p for p in (model, calib, eval_text) if p]
    if model and model.lower().endswith(".onnx") and os.path.lexists(output) and os.path.isfile(model):
        d = os.path.dirname(os.path.abspath(model))
        paths += [os.path.join(d, loc) for loc in _siblings(model)]
    return tuple(paths)


def _copy_hashing(src: str, dst: str) -> tuple[int, str]:
    """Copy one file, returning (bytes, sha256) of what was copied."""
    h, n = hashlib.sha256(), 0
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        for chunk in iter(lambda: fi.read(1 << 22), b""):
            h.update(chunk)
            fo.write(chunk)
            n += len(chunk)
    shutil.copymode(src, dst)  # an executable stays executable (model.so)
    return n, h.hexdigest()


def _tree(root: str) -> tuple[list[str], list[str], list[str]]:
    """(directories, regular files, anything else) under ``root``, as sorted relative paths."""
    dirs: list[str] = []
    files: list[str] = []
    other: list[str] = []
    for r, ds, fs in os.walk(root):
        ds.sort()
        for name in ds + sorted(fs):
            p = os.path.join(r, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            (dirs if stat.S_ISDIR(st.st_mode) else files if stat.S_ISREG(st.st_mode) else other).append(rel)
    return dirs, files, other


def _checked_copy(e: str, dest: str) -> str | None:
    """Copy an entry's output to ``dest`` checking every file against the entry's record; the problem found,
    or None. ``shutil.copy`` semantics: fresh modification times, so make/ninja see the output as new."""
    try:
        with open(os.path.join(e, SUMS), encoding="utf-8") as f:
            sums = json.load(f)
        record, record_dirs = dict(sums["files"]), list(sums.get("dirs", []))
        for rel in list(record) + record_dirs:
            if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in rel.split(os.sep):
                return f"the entry's record names {rel!r}, which is not a path inside it"
        src = os.path.join(e, OUT)
        if os.path.islink(src) or os.path.islink(e):
            return "the entry is a symlink"
        dirs, files, other = _tree(src)
        if other:
            return f"{other[0]} is not a regular file"
        missing, extra = sorted(set(record) - set(files)), sorted(set(files) - set(record))
        if missing or extra:
            return ", ".join([f"{m} is missing" for m in missing[:3]] + [f"{x} was not recorded" for x in extra[:3]])
        os.makedirs(dest)
        for d in sorted(set(dirs) | set(record_dirs)):
            os.makedirs(os.path.join(dest, d), exist_ok=True)
        for rel in files:
            n, digest = _copy_hashing(os.path.join(src, rel), os.path.join(dest, rel))
            size, want = record[rel]
            if n != size:
                return f"{rel} holds {n} bytes, {size} were stored"
            if digest != want:
                return f"{rel}: sha256 {digest[:12]}... differs from the stored {want[:12]}..."
        return None
    except (OSError, ValueError, KeyError, TypeError) as ex:
        return f"unreadable: {type(ex).__name__}: {ex}"


def entry(cache_dir: str, k: str) -> str:
    return os.path.join(cache_dir, k[:2], k)


def lookup(cache_dir: str, k: str) -> str | None:
    e = entry(cache_dir, k)
    if not (_real_dir(os.path.dirname(e)) and _real_dir(e)):
        return None
    return e if os.path.isfile(os.path.join(e, SUMS)) else None


def store(cache_dir: str | None, k: str | None, out_dir: str) -> None:
    """Copy a finished output directory into the cache (atomically; a failure to cache is not an error)."""
    if not cache_dir or not k or not is_cache_root(cache_dir):
        return
    e = entry(cache_dir, k)
    if lookup(cache_dir, k) is not None:
        return
    if os.path.lexists(e):
        _evict(e)  # a folder without its record (an interrupted older edgec, a hand edit): never usable
    shard = os.path.dirname(e)
    tmp = None
    try:
        os.makedirs(shard, exist_ok=True)
        _sweep_shard(shard)  # temporary folders of writers that died (SIGKILL, OOM)
        tmp = tempfile.mkdtemp(prefix=f".tmp-{_ME}-", dir=shard)
        hold(tmp)
        dirs, files, other = _tree(out_dir)
        if other:
            return
        record = {}
        for d in dirs:
            os.makedirs(os.path.join(tmp, OUT, d), exist_ok=True)
        os.makedirs(os.path.join(tmp, OUT), exist_ok=True)
        for rel in files:
            record[rel] = list(_copy_hashing(os.path.join(out_dir, rel), os.path.join(tmp, OUT, rel)))
        with open(os.path.join(tmp, SUMS), "w", encoding="utf-8") as f:
            json.dump({"version": VERSION, "files": record, "dirs": dirs}, f, sort_keys=True)
        try:
            os.rename(tmp, e)
            release(tmp)
            tmp = None
        except OSError:
            pass  # another process stored it first
    except OSError:
        pass
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            release(tmp)


# ------------------------------------------------------------------------------------------------- keying
class Unkeyable(Exception):
    """An input the cache cannot key safely (not a regular file, or one that holds more than it declares)."""


def _hash_path(h, path: str) -> bool:
    """Feed a file's bytes, or every file of a folder (sorted, with relative names), into ``h``; True when
    the bytes contain ``location`` (an ONNX file naming external data)."""
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        root = os.path.realpath(path)
        for r, dirs, files in os.walk(path):  # symlinked folders are not entered
            _note(r, _signature(r))  # a file added or removed changes the folder's times
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(r, f)
                h.update(os.path.relpath(p, path).encode() + b"\0")
                real = os.path.realpath(p)
                if os.path.islink(p) and os.path.commonpath([real, root]) != root:
                    # leads outside the folder: keyed by what it points at, never by reading it
                    try:
                        t = os.stat(p)
                    except OSError:
                        h.update(b"dangling\0")
                        continue
                    h.update(
                        json.dumps(
                            [os.readlink(p), t.st_mode, t.st_size, t.st_mtime_ns, t.st_ctime_ns, t.st_ino, t.st_dev]
                        ).encode()
                        + b"\0"
                    )
                    _note(p, _signature(p))
                    continue
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
_index: dict | None = None
_index_path: str | None = None
_index_dirty = False


def _signature(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _file_digest(path: str) -> tuple[str, bool]:
    global _index_dirty
    ap = os.path.abspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise Unkeyable(f"{path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unkeyable(f"{path} is not a regular file")
        sig = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
        _note(path, sig)
        if _index is not None and ap in _index and _index[ap][0] == sig:
            return _index[ap][1], _index[ap][2]
        h = hashlib.sha256()
        found, tail, left = False, b"", st.st_size
        while left > 0:
            chunk = f.read(min(1 << 22, left))
            if not chunk:
                raise Unkeyable(f"{path} holds fewer bytes than it declares")
            left -= len(chunk)
            h.update(chunk)
            found = found or b"location" in tail + chunk[:8] or b"location" in chunk
            tail = chunk[-8:]
        if f.read(1):  # a pseudo-file (/proc) or one still growing: its size says nothing about its bytes
            raise Unkeyable(f"{path} holds more bytes than it declares")
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
    if not (_index_dirty and _index_path) or _index is None:
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
    """The external-data locations an ONNX model names (their bytes are part of the model), confined as the ONNX
    frontend confines them: regular files inside the model's folder. Others are the frontend's error."""
    d = os.path.dirname(os.path.abspath(model_path))
    root = os.path.realpath(d)
    try:
        import onnx

        proto = onnx.load(model_path, load_external_data=False)
    except Exception:  # noqa: BLE001 - an unreadable model is the frontend's error to report, uncached
        return []
    locs = set()
    tensors = list(proto.graph.initializer)
    for n in proto.graph.node:  # Constant values (and any tensor attribute) may name external data too
        for a in n.attribute:
            tensors += [a.t] if a.HasField("t") else []
            tensors += list(a.tensors)
    for t in tensors:
        for e in t.external_data:
            if e.key == "location":
                locs.add(e.value)
    out = []
    for p in sorted(locs):
        if not p or os.path.isabs(p) or "\0" in p:
            continue
        real = os.path.realpath(os.path.join(d, p))
        if os.path.commonpath([real, root]) != root or real == root:
            continue
        try:
            if stat.S_ISREG(os.stat(real).st_mode):
                out.append(p)
        except OSError:
            continue
    return out


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
                    src.append(
                        (os.path.relpath(os.path.join(root, f), os.path.dirname(pkg)), st.st_size, st.st_mtime_ns)
                    )
    return [sorted(dists), src, os.environ.get(AUTOLOAD_ENV, ""), _cpu()]


def _cpu() -> str:
    """The host CPU's model and feature flags (an artifact built for mcpu=native runs only where they hold)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            first = f.read(65536).split("\n\n", 1)[0]
    except OSError:
        first = ""
    keep = [
        ln
        for ln in first.splitlines()
        if ln.split(":", 1)[0].strip() in ("model name", "flags", "Features", "CPU part", "CPU implementer")
    ]
    return hashlib.sha256("\n".join([platform.machine(), *keep]).encode()).hexdigest()[:16]


# key() is asked twice per compile (the CLI looks up before importing the compiler, the compiler again): the
# second time it reuses the key while every file and folder the first one read keeps its stat signature.
_MEMO: dict[str, tuple[str, list]] = {}
_touched: list | None = None


def _note(path: str, sig: list) -> None:
    if _touched is not None:
        _touched.append((os.path.abspath(path), sig))


def _still(path: str, sig: list) -> bool:
    try:
        return _signature(path) == sig
    except OSError:
        return False


def key(
    model_path: str, calib: str | None, options: dict, extra: str | None = None, cache_dir: str | None = None
) -> str:
    """The content address of a compile (sha256 hex); remembered per process while every file and folder it
    read keeps its stat signature. Raises :class:`Unkeyable` for inputs that cannot be keyed safely."""
    global _touched
    stamp = json.dumps([options, model_path, calib, extra, cache_dir], sort_keys=True, default=str)
    memo = _MEMO.get(stamp)
    if memo is not None and all(_still(p, sig) for p, sig in memo[1]):
        return memo[0]
    _load_index(cache_dir)
    _touched = []
    try:
        k = _key(model_path, calib, options, extra)
        _MEMO[stamp] = (k, _touched)
    except OSError as e:
        raise Unkeyable(str(e)) from None
    finally:
        _touched = None
        _save_index()
    return k


def _declared_bytes(path: str) -> int:
    """Bytes of a model file, or of the regular files of a model folder (symlinks not followed)."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    return _tree_bytes(path)


def _check_budget(nbytes: int, what: str) -> None:
    """edgec holds at least a model's bytes while compiling it, so one beyond the memory budget is refused later
    anyway: never spend minutes hashing (say) a sparse 40 GB file to key it."""
    from .memory import memory_budget

    try:
        if nbytes > memory_budget():
            raise Unkeyable(f"{what} is larger than the memory budget")
    except ValueError:
        pass  # a malformed $EDGEC_MAX_MEMORY: the compile reports it


def _key(model_path: str, calib: str | None, options: dict, extra: str | None = None) -> str:
    from . import __version__

    size = _declared_bytes(model_path)
    _check_budget(size, model_path)
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"v": VERSION, "edgec": __version__, "env": _environment(), **options}, sort_keys=True, default=str
        ).encode()
    )
    h.update(b"\0model\0")
    external = _hash_path(h, model_path)
    onnx_model = model_path.lower().endswith(".onnx") or options.get("frontend") == "onnx"
    if external and onnx_model and os.path.isfile(model_path):
        d = os.path.dirname(os.path.abspath(model_path))
        sibs = _siblings(model_path)
        _check_budget(size + sum(os.path.getsize(os.path.join(d, loc)) for loc in sibs), model_path)
        for loc in sibs:
            h.update(loc.encode() + b"\0")
            _hash_file(h, os.path.join(d, loc))
    if calib and os.path.exists(calib):
        h.update(b"\0calib\0")
        _hash_path(h, calib)
    if extra and os.path.exists(extra):
        h.update(b"\0extra\0")
        _hash_path(h, extra)
    return h.hexdigest()
