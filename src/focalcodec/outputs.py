"""One rule for every file this package writes.

- :func:`check_targets` runs before any work: it refuses an output that exists (unless
  ``force``), an output that is one of the inputs (even with ``force``), two jobs writing one
  output, and a folder that cannot be written.
- :func:`output_path` is the one writer: a context manager that yields a temporary path in
  the destination folder; the caller writes there with any library (soundfile, torch.save,
  plain bytes), and on success the file (or folder) is published in one atomic step. Without
  ``force`` publishing is create-exclusive (a hard link), so of two runs racing for one new
  path exactly one wins and the other gets a clean :class:`~focalcodec.errors.OutputError`;
  with ``force`` it replaces the old file atomically. A failure, Ctrl-C or SIGTERM removes the
  temporary file; temporaries of runs killed outright (SIGKILL, power loss) are swept the
  next time anything is written into that folder.
- :func:`open_output` is the same for code that streams into a file object; ``"-"`` is
  standard output.
- :func:`write_bytes` / :func:`write_text` / :func:`write_json`: one-call versions.

Files the package manages itself (checkpoints, caches, manifests it keeps up to date) pass
``force=True``: they are still written atomically and cleaned up.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from .errors import FocalCodecError, OutputError

__all__ = ["check_targets", "check_writable", "open_output", "output_path", "write_bytes", "write_json", "write_text"]

STDOUT = "-"
_TAG = ".focalcodec-tmp"
# errno values of a write that failed for want of room (or on a read-only file system), never for a bad input
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_live: set[Path] = set()
_lock = threading.Lock()
_handlers_installed = False
_HOST = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname()) or "host"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _cleanup_all() -> None:
    with _lock:
        live = list(_live)
        _live.clear()
    for p in live:
        _remove(p)


def _on_signal(signum: int, frame: object) -> None:
    _cleanup_all()
    # Exit as the default action would (128 + signal number), running finally blocks.
    raise SystemExit(128 + signum)


def _install_handlers() -> None:
    """Clean temporaries on SIGTERM / SIGHUP (once, main thread, only where the default
    action is in place, so an application's own handlers are left alone)."""
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    _handlers_installed = True
    atexit.register(_cleanup_all)
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _on_signal)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner() -> str:
    """``PID@HOST`` of this process, as written into temporary names."""
    return f"{os.getpid()}@{_HOST}"


def _sweep(folder: Path) -> None:
    """Remove temporaries left in ``folder`` by runs of this host that no longer exist
    (temporaries of other hosts sharing the folder, e.g. torchrun nodes, are left alone)."""
    try:
        names = [p for p in folder.iterdir() if p.name.startswith(".") and _TAG in p.name]
    except OSError:
        return
    for p in names:
        owner = p.name.split(_TAG)[0].rsplit(".", 1)[-1]
        pid_text, _, host = owner.partition("@")
        try:
            pid = int(pid_text)
        except ValueError:
            continue
        if host not in ("", _HOST):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            _remove(p)


def _temp_name(path: Path) -> Path:
    # Keep the suffix, so libraries that pick a format from the name still do.
    n = 0
    while True:
        tmp = path.with_name(f".{path.stem}.{_owner()}{_TAG}{n or ''}{path.suffix}")
        if not tmp.exists():
            return tmp
        n += 1


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _writable_folder(path: Path) -> None:
    folder = path.parent
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"cannot write {path}: {probe} is a file, not a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: the folder {probe} is not writable; choose another output")


def check_writable(path: str | Path, folder: bool = False) -> None:
    """Refuse, before any work, a ``path`` that cannot be written: its folder is read-only, or
    a file stands where a folder is needed (``folder=True``: ``path`` is itself a folder to
    write into, which may exist)."""
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path} is a file; give a folder")
        _writable_folder(path / "x")
    else:
        _writable_folder(path)


def check_targets(targets: Iterable[str | Path], inputs: Iterable[str | Path] = (), force: bool = False) -> None:
    """Refuse, before any work, outputs that would overwrite without ``force``, replace an
    input, collide with each other or land in a folder that cannot be written."""
    paths = [Path(t) for t in targets if str(t) != STDOUT]
    ins = [Path(i) for i in inputs if str(i) != STDOUT]
    seen: dict[str, Path] = {}
    for p in paths:
        key = os.path.normcase(os.path.abspath(p))
        if key in seen:
            raise OutputError(f"several outputs would be written to {p}; rename the inputs or use separate runs")
        seen[key] = p
        for i in ins:
            if _same_file(p, i) or key == os.path.normcase(os.path.abspath(i)):
                raise OutputError(f"output {p} is the input {i}; choose another output")
        if p.exists() and not force:
            raise OutputError(f"{p} exists; use --force to overwrite it")
        _writable_folder(p)


def _publish(tmp: Path, path: Path, force: bool) -> None:
    if force:
        if path.is_dir() and not tmp.is_dir():
            raise OutputError(f"cannot write {path}: it is a folder")
        if tmp.is_dir() and path.exists():
            old = path.with_name(f".{path.name}.{_owner()}{_TAG}old")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            finally:
                _remove(old)
            return
        os.replace(tmp, path)
        return
    if tmp.is_dir():
        if path.exists():
            raise OutputError(f"{path} exists; use --force to overwrite it")
        os.rename(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputError(f"{path} exists; use --force to overwrite it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # No hard links here (FAT, some network file systems): reserve the name, then replace.
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raise OutputError(f"{path} exists; use --force to overwrite it") from None
        os.close(fd)
        os.replace(tmp, path)
        return
    tmp.unlink()


@contextlib.contextmanager
def output_path(
    path: str | Path, force: bool = False, inputs: Sequence[str | Path] = (), folder: bool = False
) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; publish it on success.

    ``folder=True`` yields a temporary folder (published as a whole). Parent folders are
    created. Raises :class:`~focalcodec.errors.OutputError` when ``path`` exists and ``force``
    is not given, or when ``path`` is one of ``inputs``; the temporary is removed on any
    failure."""
    path = Path(path)
    check_targets([path], inputs, force)
    _install_handlers()
    made = [d for d in [path.parent, *path.parent.parents] if not d.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {path.parent}: {exc.strerror or exc}") from None
    _sweep(path.parent)
    tmp = _temp_name(path)
    with _lock:
        _live.add(tmp)
    try:
        if folder:
            tmp.mkdir()
        yield tmp
        if not tmp.exists():
            raise OutputError(f"nothing was written for {path}")
        _publish(tmp, path, force)
    except BaseException as exc:
        _remove(tmp)
        for d in made:  # leave no empty folders behind (deepest first)
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(exc, OSError) and not isinstance(exc, FocalCodecError) and exc.errno in _FULL:
            # Disk full and the like: name the file (the OS and pyarrow do not).
            raise OutputError(
                f"cannot write {path}: {os.strerror(exc.errno)}; free some space or choose another output"
            ) from None
        raise
    finally:
        with _lock:
            _live.discard(tmp)


@contextlib.contextmanager
def open_output(
    path: str | Path, mode: str = "wb", force: bool = False, inputs: Sequence[str | Path] = ()
) -> Iterator[IO]:
    """:func:`output_path` as an open file (``mode`` "wb" or "w"); ``"-"`` is standard output."""
    if str(path) == STDOUT:
        stream = sys.stdout.buffer if "b" in mode else sys.stdout
        yield stream
        stream.flush()
        return
    with output_path(path, force, inputs) as tmp:
        encoding = None if "b" in mode else "utf-8"
        with open(tmp, mode, encoding=encoding) as f:
            yield f


def write_bytes(path: str | Path, data: bytes, force: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
    """Write ``data`` to ``path`` (see :func:`output_path`); returns ``path``."""
    with open_output(path, "wb", force, inputs) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, force: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
    """Write ``text`` (UTF-8) to ``path`` (see :func:`output_path`); returns ``path``."""
    with open_output(path, "w", force, inputs) as f:
        f.write(text)
    return Path(path)


def write_json(
    path: str | Path, obj: object, force: bool = False, inputs: Sequence[str | Path] = (), sort_keys: bool = False
) -> Path:
    """``obj`` as indented UTF-8 JSON (see :func:`write_text`) that any reader takes: NaN and
    infinities become ``null``, numpy / torch scalars plain numbers, paths strings."""
    text = json.dumps(_plain(obj), indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    return write_text(path, text, force, inputs)


def _plain(obj: object) -> object:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return str(obj) if isinstance(obj, Path) else obj
