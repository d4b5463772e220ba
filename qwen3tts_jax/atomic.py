"""Atomic outputs: a file or folder appears complete, with ordinary permissions, or not at all.

Every writer in the package (audio files, batch manifests and settings, converted and random
model folders, training checkpoints) goes through `atomic_path`: it yields a hidden temporary
path beside the target, in the same folder (so the final `os.replace` is a rename on one file
system), fsyncs what was written there, gives it the permissions a plain `open`/`mkdir` would
have under the process umask (`mkstemp`/`mkdtemp` make 0600/0700), and renames it into place. On
any error, Ctrl-C included, the temporary is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PART_SUFFIX = ".part"  # temporaries are `.<name>.<random>.part`: hidden, and recognisable to clean up


def _umask() -> int:
    # The only portable way to read the umask is to set it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_tree(path: Path) -> None:
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in paths:
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; durability is then the OS's
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, folder: bool = False, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path to fill; on success it becomes `target`.

    `folder=False`: the temporary is an empty file (write it by name, e.g. `soundfile.write`).
    `folder=True`: the temporary is an empty folder to fill with files.
    `replace=False` refuses an existing target (`FileExistsError`) before and after the body.
    An existing folder target is swapped out and removed after the new one is in place.
    """
    target = Path(target)
    if not replace and (target.exists() or target.is_symlink()):
        raise FileExistsError(f"{target}: already exists; remove it or choose another path")
    parent = target.parent
    prefix = f".{target.name}."
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=PART_SUFFIX, dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=PART_SUFFIX, dir=parent)
        os.close(fd)
        tmp = Path(name)
    old = None
    try:
        yield tmp
        _fsync_tree(tmp)
        mask = _umask()
        if folder:  # some writers (safetensors) create their files 0600 as well
            for p in [tmp, *tmp.rglob("*")]:
                os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
        else:
            os.chmod(tmp, 0o666 & ~mask)
        if not replace and (target.exists() or target.is_symlink()):
            raise FileExistsError(f"{target}: appeared while it was being written; not replaced")
        if folder and target.is_dir() and not target.is_symlink():
            old = parent / f".{target.name}.old-{os.getpid()}{PART_SUFFIX}"
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(parent)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if old is not None and not target.exists():
            os.replace(old, target)  # put the previous folder back
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
