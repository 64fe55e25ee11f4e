"""The results directory: one checksummed shard per unit, named by the unit's content hash.

Layout of a checkpoint directory ``DIR``::

    DIR/units/<unit hash>.npz    values of one unit (float64), its hash and a SHA-256 of the values
    DIR/plans/<plan key>.json    the plan that wrote them (for people; never read back for values)
    DIR/contexts/<plan key>.pt   the prepared context (only where workers in other processes read it)

Writes are atomic (temporary file in the same directory, fsync, rename), so a killed writer leaves
either the old state or a complete shard.  A shard counts only if it reads back, names the unit it
is filed under, matches its checksum and holds finite values of the right length; anything else
(truncated, edited, bit-flipped, NaN) is reported by name and recomputed.  Because shards are keyed
by content, one directory serves any number of scans, models and executors.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint path that cannot be used (not a directory, not writable, old single-file format).

    Examples:
        >>> import causalinterp as ci
        >>> issubclass(ci.CheckpointError, Exception)          # raised by scan(..., checkpoint=DIR) for an unusable DIR
        True
    """


class CheckpointWarning(UserWarning):
    """A shard could not be read (it is recomputed) or written (the scan goes on without saving it)."""


def values_checksum(unit_hash: str, values: np.ndarray) -> str:
    values = np.ascontiguousarray(values, dtype=np.float64)
    return hashlib.sha256(unit_hash.encode() + b"|" + values.tobytes()).hexdigest()


def _write_atomic(path: Path, write) -> None:
    """Write through `write(file)` into a temporary file beside `path`, fsync, then rename over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class ResultStore:
    """Per-unit shards under ``root/units``; see the module docstring for what counts as a valid shard."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if self.root.suffix == ".npz" and self.root.is_file():
            raise CheckpointError(f"checkpoint {self.root} is a single-file checkpoint from an older version; "
                                  "checkpoints are now directories: pass a directory path (the old file can be "
                                  "deleted)")
        if self.root.exists() and not self.root.is_dir():
            raise CheckpointError(f"checkpoint {self.root} exists and is not a directory; pass a directory path")
        try:
            (self.root / "units").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create checkpoint directory {self.root}: {e.strerror or e}; "
                                  "choose a writable place") from None
        if not os.access(self.root / "units", os.W_OK):
            raise CheckpointError(f"checkpoint directory {self.root} is not writable; choose a writable place")
        self.write_failed: str | None = None

    def shard_path(self, unit_hash: str) -> Path:
        return self.root / "units" / f"{unit_hash}.npz"

    def load(self, unit_hash: str, n_rows: int) -> np.ndarray | None:
        """Values of a valid shard, or None (absent or invalid; invalid ones are reported by name)."""
        path = self.shard_path(unit_hash)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                values = np.asarray(z["values"], dtype=np.float64)
                stored_hash, checksum = str(z["unit"]), str(z["sha256"])
        except Exception as e:  # zip/CRC errors, truncation, missing keys: all mean "not usable"
            return self._invalid(path, f"unreadable ({type(e).__name__}: {e})")
        if stored_hash != unit_hash:
            return self._invalid(path, f"holds unit {stored_hash}, not {unit_hash}")
        if values.shape != (n_rows,):
            return self._invalid(path, f"holds {values.shape} values, expected ({n_rows},)")
        if values_checksum(unit_hash, values) != checksum:
            return self._invalid(path, "its values do not match their checksum (edited or corrupted)")
        if not np.isfinite(values).all():
            return self._invalid(path, "holds NaN or infinite values")
        return values

    def _invalid(self, path: Path, why: str) -> None:
        warnings.warn(f"checkpoint shard {path} is invalid: {why}; recomputing that unit", CheckpointWarning,
                      stacklevel=3)
        return None

    def save(self, unit_hash: str, values: np.ndarray) -> bool:
        """Store a unit's values atomically; only finite values are stored (a unit is done only then).

        A failed write (disk full, permissions) is reported once and further writes are skipped: the
        scan still returns its results, and a rerun recomputes only what was not saved.
        """
        values = np.ascontiguousarray(values, dtype=np.float64)
        if self.write_failed is not None or not np.isfinite(values).all():
            return False
        path = self.shard_path(unit_hash)
        try:
            _write_atomic(path, lambda f: np.savez(f, values=values, unit=np.array(unit_hash),
                                                   sha256=np.array(values_checksum(unit_hash, values))))
        except OSError as e:
            self.write_failed = f"{e.strerror or e}"
            warnings.warn(f"could not write checkpoint shard {path}: {self.write_failed}; the scan goes on without "
                          f"saving further units (a rerun with this checkpoint recomputes only the unsaved ones)",
                          CheckpointWarning, stacklevel=2)
            return False
        return True

    def save_text(self, kind: str, name: str, text: str) -> Path:
        path = self.root / kind / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, lambda f: f.write(text.encode()))
        return path

    def context_path(self, key: str) -> Path:
        return self.root / "contexts" / f"{key}.pt"

    def save_context(self, ctx) -> Path:
        """Store a prepared context for workers in other processes (written once per plan key)."""
        import torch
        path = self.context_path(ctx.key)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, lambda f: torch.save(ctx, f))
        return path

    def load_context(self, key: str):
        import torch
        path = self.context_path(key)
        ctx = torch.load(path, weights_only=False)
        if ctx.key != key:
            raise CheckpointError(f"context {path} belongs to plan {ctx.key}, not {key}; delete it and rerun")
        return ctx
