# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: a content-addressed store of unpacked layers.

Layout (the store root is 0700: layers hold setuid files and device nodes that
host users must not reach)::

    STORE/.lock                          flock: one writer at a time
    STORE/sha256/<diff_id hex>/diff/     the unpacked layer: an overlay lower directory
    STORE/sha256/<diff_id hex>/layer.json  completion marker, written last
    STORE/by-blob/sha256/<hex>.json      stored blob digest -> diff_id (lets a rerun skip hashing the tar)
    STORE/tmp/                           staging; anything left here was interrupted

A layer is keyed by its diff_id (the sha256 of the uncompressed tar), so the
same layer compressed differently (an oci-archive's gzip blob, a docker save's
plain tar) is unpacked once.  A layer is unpacked into tmp/, verified,
synced, given its marker, and renamed into place in one step: a layer
directory without a valid marker is therefore "partial" (a crash in an older
layout, or hands-on damage) and is unpacked again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import stat
import tempfile
import time
import typing as t
from contextlib import contextmanager

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import (
    image_manifest, image_source, layer_stream, layer_unpack, mounts)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.overlay import overlays_with_lower
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

DEFAULT_STORE = "/var/lib/kernelbox/layers"
MARKER = "layer.json"
DIFF = "diff"
SCHEMA = 1
PRESENT, PARTIAL, ABSENT = "present", "partial", "absent"
LOCK_TIMEOUT = 1800.0
FAULT_ENV = "KERNELBOX_TEST_FAULT"  # tests only: SIGKILL this process at a named point (layer-staged, ...)


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def layer_path(store: str, diff_id: str) -> str:
    algorithm, hexpart = image_manifest.digest_parts(diff_id)
    return os.path.join(store, algorithm, hexpart)


def lower_dir(store: str, diff_id: str) -> str:
    """The directory to give overlayfs as a lower layer."""
    return os.path.join(layer_path(store, diff_id), DIFF)


def _read_json(path: str) -> t.Optional[t.Dict[str, t.Any]]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            data = json.loads(handle.read(1 << 20).decode("utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def status(store: str, diff_id: str) -> str:
    """present (marker valid, diff a directory), partial (something else is there) or absent."""
    path = layer_path(store, diff_id)
    try:
        os.lstat(path)
    except FileNotFoundError:
        return ABSENT
    marker = _read_json(os.path.join(path, MARKER))
    if not marker or marker.get("schema") != SCHEMA or marker.get("diff_id") != diff_id:
        return PARTIAL
    try:
        if not stat.S_ISDIR(os.lstat(os.path.join(path, DIFF)).st_mode):
            return PARTIAL
    except OSError:
        return PARTIAL
    return PRESENT


def read_marker(store: str, diff_id: str) -> t.Optional[t.Dict[str, t.Any]]:
    return _read_json(os.path.join(layer_path(store, diff_id), MARKER))


def _blob_record(store: str, digest: str) -> str:
    algorithm, hexpart = image_manifest.digest_parts(digest)
    return os.path.join(store, "by-blob", algorithm, hexpart + ".json")


def diff_id_of_blob(store: str, digest: str) -> t.Optional[str]:
    """The diff_id recorded for a stored blob digest, if this store has unpacked that blob before."""
    record = _read_json(_blob_record(store, digest))
    value = record.get("diff_id") if record else None
    try:
        return image_manifest.normalise_digest(value) if value else None
    except ValueError:
        return None


def write_json_atomic(dir_fd: int, name: str, payload: t.Dict[str, t.Any]) -> None:
    """Write JSON to ``name`` in ``dir_fd``: temp file, fsync, rename, fsync the directory."""
    temp = ".%s.%d.tmp" % (name, os.getpid())
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, json.dumps(payload, indent=1, sort_keys=True).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def _real_fd(path: str, create: bool = False, mode: int = 0o700) -> int:
    """A readable directory fd (fsync, fchmod, scandir need more than O_PATH), no symlinks on the way."""
    held = mounts.open_dir(path, create=create, mode=mode)
    try:
        return os.open(mounts.fd_path(held), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(held)


def open_root(store: str) -> int:
    """A readable fd of the store root, creating the store (mode 0700, its parents 0755) if needed."""
    parent = os.path.dirname(store) or "/"
    os.close(mounts.open_dir(parent, create=True, mode=0o755))
    return _real_fd(store, create=True, mode=0o700)


@contextmanager
def locked(store: str, timeout: float = LOCK_TIMEOUT) -> t.Iterator[int]:
    """Hold the store's lock (creating the store, mode 0700, if needed); yields a fd of the store root."""
    root = open_root(store)
    lock = os.open(".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=root)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise KernelboxError("the layer store %s stayed locked by another run for %d s" % (store, timeout))
                time.sleep(0.2)
        yield root
    finally:
        os.close(lock)
        os.close(root)


def clean_staging(store: str) -> t.List[str]:
    """Remove what interrupted runs left in tmp/ (only called with the lock held)."""
    tmp = os.path.join(store, "tmp")
    try:
        fd = _real_fd(tmp)
    except FileNotFoundError:
        return []
    removed = []
    try:
        for name in os.listdir(fd):
            mounts.remove_tree_at(fd, name, os.path.join(tmp, name))
            removed.append(name)
    finally:
        os.close(fd)
    return removed


def _refuse_if_mounted(store: str, diff_id: str, doing: str) -> None:
    users = overlays_with_lower(layer_path(store, diff_id), mounts.visible_mounts())
    if users:
        raise KernelboxError("refusing to %s layer %s: it is a lower layer of the overlay at %s"
                             % (doing, diff_id, ", ".join(m.info.mount_point for m in users)))


def unpack_layer(store: str, layer: image_source.Layer, diff_id: t.Optional[str] = None,
                 limit: t.Optional[int] = None) -> t.Dict[str, t.Any]:
    """Unpack ``layer`` into the store unless it is there already; returns its marker.

    ``diff_id`` is the expected uncompressed digest (from the image config, or
    computed beforehand for a plain tarball); the blob digest comes from the
    layer.  The marker has ``"unpacked": true`` when this call did the work.
    ``limit`` bounds the layer's uncompressed size (layer_unpack.unpack).  A
    store this call created is removed again when the layer is refused: a
    refused image leaves no empty skeleton behind.
    """
    fresh = not os.path.lexists(store)
    try:
        with locked(store) as root:
            clean_staging(store)
            if diff_id and status(store, diff_id) == PRESENT:
                return dict(read_marker(store, diff_id) or {}, unpacked=False)
            tmp_path = os.path.join(store, "tmp")
            tmp_fd = _real_fd(tmp_path, create=True)
            try:
                staged, marker = _stage(tmp_fd, tmp_path, layer, diff_id, limit)
                _fault("layer-staged")
                try:
                    done = _commit(store, root, tmp_fd, staged, marker["diff_id"])
                except BaseException:
                    mounts.remove_tree_at(tmp_fd, staged, os.path.join(tmp_path, staged))
                    raise
            finally:
                os.close(tmp_fd)
            _fault("layer-committed")
            _record_blob(store, root, marker["digest"], marker["diff_id"])
            return dict(read_marker(store, marker["diff_id"]) or marker, unpacked=done)
    except BaseException:
        if fresh:
            remove_skeleton(store)
        raise


_SKELETON = {".lock", ".writers", "tmp"}


def remove_skeleton(store: str) -> None:
    """Remove a store that holds nothing but its lock files and an empty tmp/ (a refused image's first run
    made them); a store with anything else in it stays."""
    try:
        names = set(os.listdir(store))
        if not names <= _SKELETON or (os.path.isdir(os.path.join(store, "tmp"))
                                      and os.listdir(os.path.join(store, "tmp"))):
            return
        for name in sorted(names):
            mounts.remove_tree(os.path.join(store, name))
        os.rmdir(store)
    except OSError:
        pass  # another run may have started using it meanwhile: then it is not ours to remove


def _stage(tmp_fd: int, tmp_path: str, layer: image_source.Layer, diff_id: t.Optional[str],
           limit: t.Optional[int] = None) -> t.Tuple[str, t.Dict[str, t.Any]]:
    """Unpack into a fresh 0700 directory under tmp/, verify, sync and mark it; removed again on any failure."""
    staging = tempfile.mkdtemp(prefix=(diff_id or "sha256:unknown").split(":")[1][:16] + ".", dir=tmp_path)
    name = os.path.basename(staging)
    try:
        staging_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=tmp_fd)
        try:
            os.mkdir(DIFF, 0o755, dir_fd=staging_fd)
            diff_fd = os.open(DIFF, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=staging_fd)
            try:
                with layer.open() as raw:
                    stats = layer_unpack.unpack(raw, diff_fd, layer.digest, diff_id, layer.size, layer.where,
                                                limit=limit)
                libc.syncfs(diff_fd)  # one writeback for the whole layer, before the marker says "complete"
            finally:
                os.close(diff_fd)
            marker = {
                "schema": SCHEMA, "diff_id": stats.diff_id, "digest": stats.compressed_digest,
                "media_type": layer.media_type, "compression": stats.compression, "size": stats.size,
                "compressed_size": stats.compressed_size, "entries": stats.entries, "whiteouts": stats.whiteouts,
                "opaque_dirs": stats.opaque_dirs, "skipped": stats.skipped, "source": layer.where,
                "unpacked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            write_json_atomic(staging_fd, MARKER, marker)
        finally:
            os.close(staging_fd)
        return name, marker
    except BaseException:
        mounts.remove_tree_at(tmp_fd, name, staging)
        raise


def _commit(store: str, root: int, tmp_fd: int, staged: str, diff_id: str) -> bool:
    """Rename the staged layer into place; False if an identical complete layer was already there."""
    algorithm, hexpart = image_manifest.digest_parts(diff_id)
    current = status(store, diff_id)
    if current == PRESENT:
        mounts.remove_tree_at(tmp_fd, staged, "staging")
        return False
    try:
        os.mkdir(algorithm, 0o700, dir_fd=root)
    except FileExistsError:
        pass
    alg_fd = os.open(algorithm, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root)
    try:
        if current == PARTIAL:
            _refuse_if_mounted(store, diff_id, "redo")
            mounts.remove_tree_at(alg_fd, hexpart, layer_path(store, diff_id))
        os.rename(staged, hexpart, src_dir_fd=tmp_fd, dst_dir_fd=alg_fd)
        os.fsync(alg_fd)
    finally:
        os.close(alg_fd)
    return True


def _record_blob(store: str, root: int, digest: str, diff_id: str) -> None:
    algorithm, hexpart = image_manifest.digest_parts(digest)
    for name in ("by-blob", os.path.join("by-blob", algorithm)):
        try:
            os.mkdir(name, 0o700, dir_fd=root)
        except FileExistsError:
            pass
    fd = os.open(os.path.join("by-blob", algorithm), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=root)
    try:
        write_json_atomic(fd, hexpart + ".json", {"diff_id": diff_id, "digest": digest})
    finally:
        os.close(fd)


def remove_layer(store: str, diff_id: str) -> None:
    """Remove one layer (refused while an overlay uses it as a lower) and the blob records pointing at it."""
    _refuse_if_mounted(store, diff_id, "remove")
    with locked(store):
        mounts.remove_tree(layer_path(store, diff_id))
        by_blob = os.path.join(store, "by-blob")
        try:
            algorithms = os.listdir(by_blob)
        except FileNotFoundError:
            return
        for algorithm in algorithms:
            folder = os.path.join(by_blob, algorithm)
            for name in os.listdir(folder):
                record = _read_json(os.path.join(folder, name))
                if record and record.get("diff_id") == diff_id:
                    try:
                        os.unlink(os.path.join(folder, name))
                    except OSError as exc:
                        if exc.errno != errno.ENOENT:
                            raise


def blob_digest(layer: image_source.Layer) -> str:
    """The digest of a layer blob as stored (e.g. a whole rootfs tarball), reading it once."""
    with layer.open() as raw:
        reader = layer_stream.HashingReader(raw)
        reader.drain()
        return reader.digest


def blob_and_diff_id(layer: image_source.Layer, limit: t.Optional[int] = None) -> t.Tuple[str, str]:
    """(blob digest, diff_id) of a layer blob, read once without writing anything (at most ``limit`` bytes
    uncompressed)."""
    with layer.open() as raw:
        return layer_stream.digests(raw, layer.where, limit)
