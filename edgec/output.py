"""Output directories, written safely: the one place that creates, replaces and cleans up after them.

* An output directory is only ever *replaced* when it is empty or was written by edgec (its
  ``manifest.json`` or ``tiers.json`` carries ``edgec_version``); anything else needs ``force=True``
  (``--force``). Even then, a directory that holds the current directory, the model or another input is
  never replaced.
* A new output is built in a private temporary directory beside it and renamed into place while holding a
  per-output lock, so concurrent compiles into one output never see each other's halves, and every backup
  has a unique name.
* Temporary and backup directories carry the pid and start time of the process that made them; one left
  behind by a process that no longer exists (SIGKILL, the OOM killer, a power cut) is removed by the next
  run that writes the same output.
* An output location that cannot be written (read-only mount, immutable or foreign directory, /proc) is an
  :class:`OutputError` naming it, not a crash.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator

from .errors import UsageError

MARKER_FILES = ("manifest.json", "tiers.json")


class OutputError(UsageError):
    """The output location cannot be used (exit 2: choose another ``-o``)."""

    kind = "output"


def default_cache_dir() -> str:
    """The compile cache's root: ``$EDGEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgec/artifacts`` (``~/.cache`` where
    XDG_CACHE_HOME is unset). Targets keep what they learn across compiles beside its entries, in
    ``<root>/TUNING_DIR/`` (the cpu target's tuning databases)."""
    env = os.environ.get("EDGEC_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgec", "artifacts")


# The cache root's folder for targets' tuning databases (one sub-folder per database); `edgec cache` counts and
# --clear-tuning deletes them.
TUNING_DIR = "tuning"


def default_output(src_path: str | None, target_name: str) -> str:
    """MODEL.TARGET in the current directory (``out.TARGET`` for an in-memory model)."""
    return os.path.splitext(os.path.basename(src_path))[0] + f".{target_name}" if src_path else f"out.{target_name}"


MAX_MANIFEST_BYTES = 256 << 20


def read_regular(path: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; OSError otherwise (a FIFO, a device or a
    symlink to one is never opened for blocking reads)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            raise OSError(errno.EINVAL, f"{path} is not a regular file of at most {limit} bytes")
        return f.read(limit + 1)[:limit]


def read_json(path: str) -> object:
    return json.loads(read_regular(path).decode("utf-8"))


def is_edgec_output(path: str) -> bool:
    """Whether ``path`` is a directory that edgec wrote (its manifest says so)."""
    for name in MARKER_FILES:
        try:
            d = read_json(os.path.join(path, name))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(d, dict) and "edgec_version" in d:
            return True
    return False


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def check_output(output: str, inputs: Iterable[str | None] = (), force: bool = False) -> None:
    """Refuse an output that must not be replaced; cheap, called before any work and again under the lock."""
    if not output or not str(output).strip():
        raise OutputError("the output directory name is empty; give -o DIR")
    real = os.path.realpath(output)
    shown = f"-o {output}"
    if real == os.path.realpath(os.sep) or _inside(os.path.realpath(os.getcwd()), real):
        raise OutputError(
            f"{shown}: the output directory would be replaced as a whole, and it is (or holds) the "
            "current directory; name a new subdirectory instead, e.g. -o out"
        )
    for p in inputs:
        if p and os.path.exists(p) and _inside(os.path.realpath(p), real):
            raise OutputError(
                f"{shown}: the output directory would be replaced as a whole, and it holds the input "
                f"{p!r}; choose an output outside it"
            )
    if os.path.lexists(output):
        if not os.path.isdir(output) or os.path.islink(output):
            raise OutputError(f"{shown}: {output!r} exists and is not a directory; choose another -o or remove it")
        if force or is_edgec_output(output):
            return
        try:
            empty = not os.listdir(output)
        except OSError as e:
            raise OutputError(
                f"{shown}: cannot read the existing directory ({e.strerror}); choose another -o"
            ) from None
        if not empty:
            raise OutputError(
                f"{shown}: the directory exists and was not written by edgec (no manifest.json of "
                "edgec's in it); edgec replaces its output as a whole, so it refuses to delete what "
                "is there. Choose another -o, or pass --force to replace it"
            )


# ---------------------------------------------------------------------------------------------- processes
def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is unavailable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


_ME = f"{os.getpid()}-{_start_time(os.getpid()) or 0}"


def _owner_alive(tag: str) -> bool:
    """Whether the process named by ``PID-START`` (as in :data:`_ME`) still runs here."""
    pid_s, _, start = tag.partition("-")
    try:
        pid = int(pid_s)
    except ValueError:
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _start_time(pid)
    return not (now and start and start != "0" and now != start)  # the pid was reused by another process


# Every temporary or backup directory edgec makes is flocked by its maker for as long as it exists (the lock
# dies with the process, whatever kills it); a sweep removes only directories nobody holds whose maker is gone
# from this pid namespace, or that are older than STALE_AFTER (a maker in another namespace or host holds the
# lock while it lives: containers sharing a bind mount, NFS).
_HELD: dict[str, int] = {}
STALE_AFTER = 60.0


def hold(path: str) -> None:
    """Lock ``path`` (a directory this process just made) for this process's lifetime or :func:`release`."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _HELD[os.path.abspath(path)] = fd


def release(path: str) -> None:
    fd = _HELD.pop(os.path.abspath(path), None)
    if fd is not None:
        os.close(fd)


def in_use(path: str) -> bool:
    """Whether some process holds ``path`` (see :func:`hold`); True when that cannot be told."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def abandoned(path: str, tag: str) -> bool:
    """A scratch directory whose maker is gone: nobody holds it, and its maker's pid is dead here or the
    directory is older than STALE_AFTER (the moment between mkdtemp and hold is the only unheld one)."""
    if in_use(path):
        return False
    if not _owner_alive(tag):
        return True
    try:
        return time.time() - os.lstat(path).st_mtime > STALE_AFTER
    except OSError:
        return False


def _tag(rest: str) -> str:
    """``PID-START`` from ``PID-START-random``."""
    pid, _, rest = rest.partition("-")
    return f"{pid}-{rest.split('-', 1)[0]}"


def scratch_prefix(output: str, kind: str = "tmp") -> str:
    """``.NAME.edgec-KIND-PID-START-`` : temporary names that say which process made them."""
    if kind not in ("tmp", "old"):
        raise ValueError(kind)
    return f".{os.path.basename(os.path.normpath(output))}.edgec-{kind}-{_ME}-"


def sweep_stale(output: str) -> list[str]:
    """Remove the temporary and backup directories of ``output`` that their makers abandoned (call it under
    :func:`output_lock`). A backup whose output is missing (the maker died between its two renames) is put
    back as the output instead of being deleted."""
    parent = os.path.dirname(os.path.abspath(output))
    head = f".{os.path.basename(os.path.normpath(output))}.edgec-"
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for n in names:
        if not n.startswith(head):
            continue
        kind, _, rest = n[len(head) :].partition("-")
        path = os.path.join(parent, n)
        if kind not in ("tmp", "old") or os.path.islink(path) or not abandoned(path, _tag(rest)):
            continue
        saved = os.path.join(path, "d")
        if kind == "old" and not os.path.lexists(output) and os.path.isdir(saved):
            try:
                os.rename(saved, output)
            except OSError:
                continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(n)
    return removed


# ------------------------------------------------------------------------------------------------- writing
# errors of writing anywhere under the output location that are about the location, not about edgec
WRITE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT})


def writable_error(output: str, e: OSError) -> OutputError:
    why = {
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "the operation is not permitted (an immutable directory?)",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "the disk quota is exhausted",
    }.get(e.errno or 0, e.strerror or str(e))
    return OutputError(f"-o {output}: cannot write the output there ({why}); choose a writable directory")


def make_scratch(output: str) -> str:
    """A new private directory beside ``output`` to build it in (stale ones are swept first)."""
    parent = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(parent, exist_ok=True)
        with output_lock(output):
            sweep_stale(output)
        tmp = tempfile.mkdtemp(prefix=scratch_prefix(output), dir=parent)
        hold(tmp)
        return tmp
    except OSError as e:
        raise writable_error(output, e) from None


@contextlib.contextmanager
def output_lock(output: str) -> Iterator[None]:
    """An exclusive lock on ``output`` (flock on ``.NAME.edgec-lock`` beside it, removed on release)."""
    parent = os.path.dirname(os.path.abspath(output))
    path = os.path.join(parent, f".{os.path.basename(os.path.normpath(output))}.edgec-lock")
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise writable_error(output, e) from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed the file: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (the two renames of a swap are never separated by them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def replace_dir(tmp: str, output: str, *, force: bool = False, inputs: Iterable[str | None] = ()) -> None:
    """Move the finished directory ``tmp`` into place as ``output``; an existing output is replaced only
    once the new one is complete, and only if :func:`check_output` allows it (checked again under the lock).
    A process killed between the two renames leaves the previous output in a backup that the next run puts
    back (:func:`sweep_stale`)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private; the output gets the usual permissions
    parent = os.path.dirname(os.path.abspath(output))
    with output_lock(output):
        check_output(output, inputs, force)
        old = None
        try:
            with _signals_deferred():
                if os.path.lexists(output):
                    old = tempfile.mkdtemp(prefix=scratch_prefix(output, "old"), dir=parent)
                    hold(old)
                    os.rename(output, os.path.join(old, "d"))
                os.rename(tmp, output)
        except OSError as e:
            if old is not None and not os.path.lexists(output) and os.path.exists(os.path.join(old, "d")):
                os.rename(os.path.join(old, "d"), output)  # put the previous output back
            raise writable_error(output, e) from None
        finally:
            release(tmp)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        release(old)


def human_bytes(n: float) -> str:
    """``n`` bytes for people: ``512 B``, ``1.50 KB``, ``12.34 MB`` (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"
