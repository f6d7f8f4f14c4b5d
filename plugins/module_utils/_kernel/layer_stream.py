# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: reading layer blobs: hashing while reading, and decompression.

gzip, xz and bzip2 come from the standard library.  zstd comes from Python
3.14's ``compression.zstd``, else the ``zstandard`` module, else the ``zstd``
program fed through a pipe by a thread; with none of them a clear error
names what to install.  The compression is sniffed from the magic bytes, not
trusted from a media type.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import shutil
import subprocess
import threading
import typing as t
import zlib

from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

COPY_CHUNK = 1 << 20
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"), (b"BZh", "bzip2"))


def detect_compression(head: bytes) -> str:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "none"


class TooLarge(KernelboxError):
    """More bytes came out of a stream than its ``limit`` allows (a decompression bomb, say)."""


class HashingReader:
    """A read-only stream that hashes and counts what passes through it; past ``limit`` bytes, TooLarge."""

    def __init__(self, raw: t.Any, algorithm: str = "sha256", limit: t.Optional[int] = None) -> None:
        self.raw = raw
        self.hash = hashlib.new(algorithm)
        self.algorithm = algorithm
        self.count = 0
        self.limit = limit

    def read(self, size: int = -1) -> bytes:
        if self.limit is not None and (size is None or size < 0):
            size = COPY_CHUNK  # never one unbounded read past the limit
        data = self.raw.read(size)
        self.hash.update(data)
        self.count += len(data)
        if self.limit is not None and self.count > self.limit:
            raise TooLarge("more than %d bytes" % self.limit)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(COPY_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "%s:%s" % (self.algorithm, self.hash.hexdigest())


class PeekReader:
    """Gives back the bytes used to sniff the compression."""

    def __init__(self, raw: t.Any, head: bytes) -> None:
        self.raw, self.head = raw, head

    def read(self, size: int = -1) -> bytes:
        if self.head:
            if size is None or size < 0:
                data, self.head = self.head + self.raw.read(), b""
                return data
            data, self.head = self.head[:size], self.head[size:]
            return data
        return self.raw.read(size)

    def readable(self) -> bool:
        return True


class ZstdProcess:
    """zstd through the ``zstd`` program when Python has no zstd module: fed by a thread, read here."""

    def __init__(self, raw: t.Any) -> None:
        program = shutil.which("zstd")
        if program is None:
            raise KernelboxError("this layer is zstd-compressed, and the target has neither a Python zstd module "
                                 "(zstandard, or Python 3.14's compression.zstd) nor the zstd program: install the "
                                 "'zstd' package")
        self.proc = subprocess.Popen([program, "-d", "-c", "-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.stdin = t.cast(t.BinaryIO, self.proc.stdin)
        self.stdout = t.cast(t.BinaryIO, self.proc.stdout)
        self.stderr = t.cast(t.BinaryIO, self.proc.stderr)
        self.error: t.Optional[BaseException] = None
        self.feeder = threading.Thread(target=self._feed, args=(raw,), daemon=True)
        self.feeder.start()

    def _feed(self, raw: t.Any) -> None:
        try:
            while True:
                chunk = raw.read(COPY_CHUNK)
                if not chunk:
                    break
                self.stdin.write(chunk)
        except BaseException as exc:  # reported by close()
            self.error = exc
        finally:
            try:
                self.stdin.close()
            except OSError:
                pass

    def read(self, size: int = -1) -> bytes:
        return self.stdout.read(size)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.stdout.close()
        self.feeder.join()
        status = self.proc.wait()
        message = self.stderr.read().decode("utf-8", "replace").strip()
        self.stderr.close()
        if self.error is not None and not isinstance(self.error, BrokenPipeError):
            raise self.error
        if status != 0:
            raise KernelboxError("zstd could not decompress the layer: %s" % (message or "exit status %d" % status))


def decompressed(raw: t.Any, compression: str) -> t.Any:
    """A stream of the uncompressed tar."""
    if compression == "none":
        return raw
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "xz":
        return lzma.LZMAFile(raw, "rb")
    if compression == "bzip2":
        return bz2.BZ2File(raw, "rb")
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
        return zstd.ZstdFile(raw, "rb")
    except ImportError:
        pass
    try:
        import zstandard  # type: ignore[import-not-found]
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    except ImportError:
        return ZstdProcess(raw)


def close(stream: t.Any) -> None:
    """Finish a stream from ``decompressed``; for the zstd program this reports its failure."""
    if isinstance(stream, ZstdProcess):
        stream.close()


# What the standard library's decompressors raise on a damaged or truncated stream (gzip.BadGzipFile and bz2's
# "Invalid data stream" are OSErrors without an errno; a real I/O error has one).
DAMAGED = (EOFError, OSError, lzma.LZMAError, zlib.error)


def damaged(exc: BaseException) -> bool:
    return isinstance(exc, DAMAGED) and not (isinstance(exc, OSError) and exc.errno is not None)


def digests(raw: t.Any, where: str = "the layer", limit: t.Optional[int] = None) -> t.Tuple[str, str]:
    """(digest as stored, diff_id) of a layer blob, computed without unpacking it.

    ``limit`` bounds the uncompressed bytes (a gzip bomb is refused, not hashed
    for hours); a damaged stream raises KernelboxError naming ``where``.
    """
    outer = HashingReader(raw)
    head = outer.read(8)
    compression = detect_compression(head)
    stream = decompressed(PeekReader(outer, head), compression)
    inner = HashingReader(stream, limit=limit)
    try:
        inner.drain()
        outer.drain()
    except TooLarge:
        raise TooLarge("%s expands to more than %d bytes uncompressed (max_layer_size); refusing it"
                       % (where, t.cast(int, limit)))
    except DAMAGED as exc:
        if not damaged(exc):
            raise
        raise KernelboxError("%s cannot be decompressed (%s): it is truncated or corrupt (%s)"
                             % (where, compression, exc))
    finally:
        close(stream)
    return outer.digest, inner.digest
