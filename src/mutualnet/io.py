"""Every file mutualnet reads or writes goes through here.

Writes are atomic: the content is produced in memory or in a temporary file beside the target, flushed to
disk, then renamed over the target in one step, so a crash, a kill or a full disk never leaves half a file
over a good one, and a failure is one :class:`~mutualnet.errors.MutualNetError` naming the target.

Reads are guarded: nothing a file holds can run code. PyTorch files load with ``weights_only=True``;
the one other pickle format (CIFAR's python batches) goes through a restricted unpickler that admits only
the numpy types those files hold; JSON nesting, image pixels and decompressed sizes are bounded. Every
failure is one :class:`~mutualnet.errors.MutualNetError` naming the file.

A run folder is owned by one process at a time (:func:`folder_lock`), and temporary files a killed
process left behind are removed on the next start (:func:`clean_stale_temps`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import pickle
import re
import socket
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import MutualNetError

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_save", "read_bytes", "read_text",
           "read_json", "read_jsonl", "read_torch_file", "read_pickle", "read_image", "json_depth",
           "clean_stale_temps", "folder_lock", "FolderLock", "MAX_JSON_DEPTH", "MAX_IMAGE_PIXELS",
           "MAX_DECOMPRESSED_BYTES"]

MAX_JSON_DEPTH = 64  # query tables, search state and COCO annotations nest 4-6 levels
MAX_IMAGE_PIXELS = 64_000_000  # 8000 x 8000; bigger images are refused before they are decoded
MAX_DECOMPRESSED_BYTES = 4 << 30  # a .gz dataset file that inflates past 4 GiB is refused (zip bomb)
LOCK_NAME = ".mutualnet.lock"
_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]*)?$")  # atomic_write's mkstemp names


def _reason(e: BaseException) -> str:
    """The short reason of an error: ``strerror`` for OS errors, else the first line of the message."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


# -- writing -----------------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems refuse fsync on folders; the rename is still atomic
        pass


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give (mkstemp's are owner-only). An
    OS error (read-only folder, no space, no permission) removes the temporary file and is raised as one
    :class:`MutualNetError` naming ``path``; ``path`` itself is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    except OSError as e:
        raise MutualNetError(f"cannot write {path}: {_reason(e)}") from None
    os.close(fd)
    try:
        os.chmod(tmp, _default_mode())
        write(Path(tmp))
        _fsync(Path(tmp))
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise MutualNetError(f"cannot write {path}: {_reason(e)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent)  # make the rename durable
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (Python file I/O: a full disk is an ``OSError``, never an abort)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, newline=""))


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically.

    The object is serialised in memory first: PyTorch's file writer can abort the process on a full disk,
    Python's file I/O raises an error the caller can report.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getbuffer())


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed :func:`atomic_write` left in ``folder``; returns what was removed.

    Call it only while holding the folder (:func:`folder_lock`): another process's temporary file in
    flight looks the same.
    """
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if _TEMP.match(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


class FolderLock:
    """Hold a folder for this process; a second holder (another process, or another open of the lock here) gets
    a clear error naming the first.

    An advisory ``flock`` on ``folder/.mutualnet.lock``: the kernel releases it when the process exits,
    however it exits (kill -9 included), so a stale lock never blocks a later run. The file records
    the holder (pid, host, start time) for the error message. Use as a context manager, or call
    :meth:`acquire` and :meth:`release`.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run folder") -> None:
        self.folder, self.what, self.fd = Path(folder), what, None

    def acquire(self) -> FolderLock:
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise MutualNetError(f"cannot use {self.what} {self.folder}: {_reason(e)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise MutualNetError(f"{self.what} {self.folder} is in use by another mutualnet process ({holder}); "
                                 "wait for it to finish or use another folder") from None
        stamp = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        with contextlib.suppress(OSError):  # the stamp is for messages; a full disk must not stop the run here
            os.ftruncate(fd, 0)
            os.pwrite(fd, stamp.encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        import fcntl

        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def folder_lock(folder: str | os.PathLike, what: str = "run folder") -> FolderLock:
    """A :class:`FolderLock` on ``folder`` (``with folder_lock(run_dir): ...``)."""
    return FolderLock(folder, what)


# -- reading -----------------------------------------------------------------------------------------
def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _check_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise MutualNetError(f"{what} not found: {path}")
    if path.is_dir():
        raise MutualNetError(f"{what} path is a folder, not a file: {path}")
    if not path.is_file():  # a FIFO, socket or device would block or never end
        raise MutualNetError(f"{what} {path} is not a regular file")
    return path


def read_bytes(path: str | os.PathLike, what: str = "file", *, max_bytes: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """The bytes of ``path``, gunzipped when it ends in ``.gz``; at most ``max_bytes`` after decompression."""
    path = _check_file(path, what)
    try:
        if path.suffix != ".gz":
            if path.stat().st_size > max_bytes:
                raise MutualNetError(f"{what} {path} is larger than {max_bytes} bytes")
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise MutualNetError(f"cannot read {what} {path}: corrupt or truncated gzip file ({_reason(e)})") from None
    except OSError as e:
        raise MutualNetError(f"cannot read {what} {path}: {_reason(e)}") from None
    if len(data) > max_bytes:
        raise MutualNetError(f"{what} {path} decompresses to more than {max_bytes} bytes")
    return data


def read_text(path: str | os.PathLike, what: str = "file", *, max_bytes: int = 1 << 30) -> str:
    """The UTF-8 text of ``path``."""
    data = read_bytes(path, what, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise MutualNetError(f"cannot read {what} {path}: not UTF-8 text") from None


def json_depth(obj: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    depth, stack = 0, [(obj, 0)]
    while stack:
        node, d = stack.pop()
        depth = max(depth, d)
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return depth


def _parse_json(text: str, source: str, max_depth: int) -> Any:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise MutualNetError(f"cannot read {source}: not valid JSON ({_reason(e)})") from None
    except RecursionError:
        raise MutualNetError(f"cannot read {source}: JSON nested more than {max_depth} levels deep") from None
    if json_depth(obj) > max_depth:
        raise MutualNetError(f"cannot read {source}: JSON nested more than {max_depth} levels deep")
    return obj


def read_json(path: str | os.PathLike, what: str = "JSON file", *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value in ``path``, nested at most ``max_depth`` levels (``NaN``/``Infinity`` are parsed;
    callers that need finite numbers check them)."""
    path = _check_file(path, what)
    return _parse_json(read_text(path, what), f"{what} {path}", max_depth)


def read_jsonl(path: str | os.PathLike, what: str = "log") -> tuple[list[Any], int]:
    """The rows of a JSON-lines file and the number of unreadable lines dropped (a line torn by a kill)."""
    text = read_bytes(path, what).decode("utf-8", errors="replace")
    rows, dropped = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(_parse_json(line, what, MAX_JSON_DEPTH))
        except MutualNetError:
            dropped += 1
    return rows, dropped


def read_torch_file(path: str | os.PathLike, what: str = "checkpoint", *, hint: str = "",
                    map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors for a missing, folder or unreadable file.

    Every PyTorch file mutualnet loads goes through here, so loading never runs code and any file that does
    not unpickle safely (corrupt, text, or pickling objects) is a :class:`MutualNetError`, not a traceback.
    """
    path = _check_file(path, what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means a corrupt or foreign file
        raise MutualNetError(
            f"cannot read {what} {path}: corrupt or not a PyTorch file ({_reason(e)}){hint}") from None


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``allowed``; anything else (``os.system``, ``eval``...) is refused."""

    def __init__(self, file: io.BufferedIOBase, allowed: frozenset[tuple[str, str]], **kw: Any) -> None:
        super().__init__(file, **kw)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        with warnings.catch_warnings():  # numpy 2 warns about its numpy.core alias
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


# what a pickled numpy array needs (numpy 1 and 2 module names; _codecs for Python 2 byte strings)
NUMPY_ARRAY_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


def read_pickle(path: str | os.PathLike, what: str, *, allowed: frozenset[tuple[str, str]] = NUMPY_ARRAY_GLOBALS,
                encoding: str = "latin1") -> Any:
    """Unpickle ``path`` admitting only the globals in ``allowed`` (default: numpy arrays), so it runs no code."""
    data = read_bytes(path, what)
    try:
        return _RestrictedUnpickler(io.BytesIO(data), allowed, encoding=encoding).load()
    except Exception as e:  # noqa: BLE001 - a refused global, a truncated or foreign file: all "not a valid file"
        raise MutualNetError(f"cannot read {what} {path}: not a valid {what} ({_reason(e)})") from None


@contextlib.contextmanager
def _open_image(path: Path, max_pixels: int):
    """The PIL image at ``path``, opened lazily (only its header is read), refused over ``max_pixels`` before
    anything is decoded; a failure inside the block (PIL's decoding included) becomes one error line."""
    from PIL import Image

    too_big = f"over the limit of {max_pixels} pixels (mutualnet.io.MAX_IMAGE_PIXELS); downscale it first"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit applies
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise MutualNetError(f"image {path} is {w}x{h}, {too_big}")
                yield im
    except Image.DecompressionBombError:
        raise MutualNetError(f"image {path} is {too_big}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise MutualNetError(f"cannot read image {path}: {_reason(e)}; remove or replace the file") from None


def read_image_tensor(path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS):
    """An RGB image as a uint8 ``3 x H x W`` tensor decoded by ``torchvision.io`` (libjpeg-turbo, libpng), with
    :func:`read_image`'s checks: the size is read from the header and refused over ``max_pixels`` before decoding.

    The training transforms work on tensors as on PIL images; ``benchmarks/bench_jpeg_path.py`` measures this
    path feeding more images per core than PIL's.
    """
    from torchvision.io import ImageReadMode, decode_image

    path = _check_file(path, "image")
    with _open_image(path, max_pixels):  # the header only: the size, and a format PIL knows
        pass
    try:
        data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        with warnings.catch_warnings():
            # torchvision 0.29 announces its decoders' move to TorchCodec; they are the ones measured here
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("error", UserWarning)  # libjpeg's "premature end of data": a truncated file
            image = decode_image(data, mode=ImageReadMode.RGB)
        if image.dtype == torch.uint16:  # a 16-bit PNG: scaled to 8 bits (its high byte), never clipped
            image = (image.to(torch.int32) >> 8).to(torch.uint8)
        return image
    except (OSError, ValueError, RuntimeError, UserWarning) as e:
        raise MutualNetError(f"cannot read image {path}: {_reason(e)}; remove or replace the file") from None


def read_image(path: str | os.PathLike, mode: str = "RGB", *, max_pixels: int = MAX_IMAGE_PIXELS):
    """A decoded PIL image in ``mode``; images over ``max_pixels`` are refused before decoding."""
    path = _check_file(path, "image")
    with _open_image(path, max_pixels) as im:
        return _eight_bit(im).convert(mode)


def _eight_bit(im):
    """A 16-bit greyscale image (PIL mode ``I;16*`` or ``I``) as 8-bit ``L`` by its high byte, as PIL already reads
    16-bit colour PNGs; PIL's own ``convert`` would clip every value above 255 to white."""
    import numpy as np
    from PIL import Image

    if not (im.mode.startswith("I;16") or im.mode == "I"):
        return im
    arr = np.asarray(im).astype(np.int64).clip(0, 65535) >> 8
    return Image.fromarray(arr.astype(np.uint8), "L")
