"""Writing output files safely: atomic single files, atomic sets of files, writable directories checked early.

Low level (no causalinterp imports), shared by `Result`, the reports, the CLI and the pytest plugin.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["OutputError", "write_atomic", "write_set", "check_writable_dir", "rescue_dir"]


class OutputError(OSError):
    """An output path that cannot be written; the message names it, the reason and what to do."""


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` via a temporary file and rename, so readers never see half a file."""
    return write_set({path: text})[0]


def write_set(files: dict) -> list[Path]:
    """Write ``{path: text}`` as a set: every file goes to a temporary file first, and only when all are
    written are they renamed into place.  If any write fails, nothing is replaced and the temporaries are
    removed, so a directory never holds a mix of old and new files from a failed write."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
    return [path for _, path in staged]


def check_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Make sure `path` is a directory we can write to (creating it if needed), before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} exists and is not a directory; give a directory (it will hold "
                          "index.html, report.md and results.json)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".causalinterp-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{what} {path} is not writable ({e.strerror or e}); choose another directory") from None
    return path


def rescue_dir() -> Path:
    """A fresh directory to save results in when the requested one failed: under the current directory if it
    is writable, else under the system's temporary directory."""
    for parent in (Path.cwd(), Path(tempfile.gettempdir())):
        try:
            return Path(tempfile.mkdtemp(prefix="causalinterp-results-", dir=parent))
        except OSError:
            continue
    raise OutputError("no writable directory to save the results in (current and temporary directories failed)")
