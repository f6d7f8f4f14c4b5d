# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: unpack one image layer tar safely, in overlayfs form.

One streaming pass reads the blob, hashes it as stored (the descriptor
digest) and as an uncompressed tar (the diff_id), and writes the entries.

Safety: every entry is created relative to the layer's root directory fd,
walking parent directories with O_NOFOLLOW, so no path, symlink or hardlink
can make a write land outside the layer.  Entries with an absolute name or a
'..' component, hardlinks outside the layer, relative symlinks that climb
above the layer root, and anything that would be written *through* a symlink
the layer itself made, make the whole layer refused (``UnsafeLayer``).
Symlink targets are otherwise stored verbatim: the container resolves them
inside its own root, so absolute targets (``/bin/sh -> /bin/busybox``) are
normal and allowed.

Whiteouts become overlayfs whiteouts: ``.wh.NAME`` -> a 0/0 character device
NAME, ``.wh..wh..opq`` -> the ``trusted.overlay.opaque=y`` xattr on its
directory.  Other ``trusted.overlay.*``/``user.overlay.*`` xattrs in a layer
are dropped: they would steer overlayfs (redirects, metacopy) from inside an
image.  Ownership (numeric), modes (setuid included), mtimes, xattrs, device
nodes and fifos are preserved.
"""

from __future__ import annotations

import base64
import errno
import os
import stat
import tarfile
import typing as t
from dataclasses import dataclass, field
from urllib.parse import unquote

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import layer_stream, mounts
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_RESERVED_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
_DIR_CACHE_LIMIT = 512
_NO_ID = (1 << 32) - 1  # (uid_t)-1 means 'unchanged' to chown


class UnsafeLayer(KernelboxError):
    """A layer entry that could write outside the layer, or is otherwise malformed: the layer is refused."""


class DigestMismatch(KernelboxError):
    """The bytes read do not match the digest the image promises."""


# --- pure decisions -------------------------------------------------------------------------------

def member_parts(name: str) -> t.List[str]:
    """The path components of a tar member name; [] is the layer root.  Raises UnsafeLayer."""
    if "\0" in name:
        raise UnsafeLayer("layer entry %r contains a NUL byte" % name)
    if name.startswith("/"):
        raise UnsafeLayer("layer entry %r is an absolute path" % name)
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer("layer entry %r contains '..'" % name)
    return parts


def whiteout_kind(basename: str) -> t.Tuple[str, t.Optional[str]]:
    """('opaque', None), ('whiteout', hidden name), ('meta', None) for other aufs names, or ('entry', None)."""
    if basename == OPAQUE_MARKER:
        return "opaque", None
    if basename.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
        return "meta", None  # .wh..wh.plnk and friends: aufs bookkeeping, nothing to create
    if basename.startswith(WHITEOUT_PREFIX):
        hidden = basename[len(WHITEOUT_PREFIX):]
        if hidden in ("", ".", ".."):
            raise UnsafeLayer("whiteout %r names no file" % basename)
        return "whiteout", hidden
    return "entry", None


def symlink_escapes(parts: t.Sequence[str], target: str) -> bool:
    """Whether a *relative* symlink at ``parts`` climbs above the layer root.  Absolute targets never do:
    they are resolved inside the container's root."""
    if target.startswith("/"):
        return False
    depth = len(parts) - 1  # the directory holding the link
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def member_xattrs(member: tarfile.TarInfo) -> t.Tuple[t.Dict[str, bytes], t.List[str]]:
    """(xattrs to set, names dropped) from PAX headers: SCHILY.xattr.* (GNU tar, Go) and LIBARCHIVE.xattr.*."""
    wanted: t.Dict[str, bytes] = {}
    dropped: t.List[str] = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            name = key[len("SCHILY.xattr."):]
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
        elif key.startswith("LIBARCHIVE.xattr."):
            name = unquote(key[len("LIBARCHIVE.xattr."):])
            try:
                raw = base64.b64decode(value + "=" * (-len(value) % 4))
            except ValueError:
                dropped.append(name)
                continue
        else:
            continue
        if name == OPAQUE_XATTR and raw == b"y":
            wanted[name] = raw  # a layer made from an overlay upper keeps its opaque dirs
        elif name.startswith(_RESERVED_XATTR_PREFIXES):
            dropped.append(name)
        else:
            wanted[name] = raw
    return wanted, dropped


# --- extraction -----------------------------------------------------------------------------------

@dataclass
class UnpackStats:
    entries: int = 0
    whiteouts: int = 0
    opaque_dirs: int = 0
    skipped: t.List[str] = field(default_factory=list)  # why something was not reproduced exactly
    compressed_digest: str = ""
    compressed_size: int = 0
    diff_id: str = ""
    size: int = 0
    compression: str = "none"

    def skip(self, text: str) -> None:
        if len(self.skipped) < 20:
            self.skipped.append(text)


_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Extractor:
    """Writes tar members under ``root_fd``; never resolves a path except component by component, O_NOFOLLOW."""

    def __init__(self, root_fd: int, stats: UnpackStats, limit: t.Optional[int] = None) -> None:
        self.root = root_fd
        self.stats = stats
        self.limit = limit
        self.declared = 0  # the sum of the entries' sizes, holes of sparse files included
        self.dirs: t.Dict[t.Tuple[str, ...], int] = {}
        self.dir_times: t.Dict[t.Tuple[str, ...], int] = {}

    def close(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()

    def _trim_cache(self) -> None:
        # Only between entries: an fd handed out during one entry must stay valid until it is done.
        if len(self.dirs) > _DIR_CACHE_LIMIT:
            self.close()

    # directories -----------------------------------------------------------------------------

    def _dir(self, parts: t.Tuple[str, ...]) -> int:
        """fd of directory ``parts`` inside the layer, creating missing ones (0755, root), never via a symlink."""
        if not parts:
            return self.root
        cached = self.dirs.get(parts)
        if cached is not None:
            return cached
        parent = self._dir(parts[:-1])
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_OPEN, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(name, 0o755, dir_fd=parent)
            fd = os.open(name, _DIR_OPEN, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise UnsafeLayer("layer entry below %s: %s is a %s in this layer; refusing to write through it"
                                  % ("/".join(parts), "/".join(parts),
                                     "symlink" if exc.errno == errno.ELOOP or self._is_symlink(parent, name)
                                     else "file"))
            raise
        self.dirs[parts] = fd
        return fd

    @staticmethod
    def _is_symlink(parent: int, name: str) -> bool:
        try:
            return stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode)
        except OSError:
            return False

    def _forget(self, parts: t.Tuple[str, ...]) -> None:
        """Drop cached fds at or below ``parts`` (the entry is being replaced)."""
        for key in [k for k in self.dirs if k[:len(parts)] == parts]:
            os.close(self.dirs.pop(key))
        for key in [k for k in self.dir_times if k[:len(parts)] == parts]:
            del self.dir_times[key]

    def _clear(self, parent: int, parts: t.Tuple[str, ...], keep_dir: bool = False) -> t.Optional[os.stat_result]:
        """Make room for a new entry at ``parts``: remove what is there (unless a directory is to be kept)."""
        try:
            info = os.lstat(parts[-1], dir_fd=parent)
        except FileNotFoundError:
            return None
        if keep_dir and stat.S_ISDIR(info.st_mode):
            return info
        self._forget(parts)
        mounts.remove_tree_at(parent, parts[-1], "/".join(parts))
        return None

    # entries ---------------------------------------------------------------------------------

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        parts = tuple(member_parts(member.name))
        self.stats.entries += 1
        self._trim_cache()
        if member.isreg():
            self.declared += member.size
            if self.limit is not None and self.declared > self.limit:
                raise layer_stream.TooLarge("its entries declare more than %d bytes (%s is %d bytes)"
                                            % (self.limit, member.name, member.size))
        if not (0 <= member.uid < _NO_ID and 0 <= member.gid < _NO_ID):
            raise UnsafeLayer("layer entry %s has uid/gid %d/%d, which Linux cannot store"
                              % (member.name, member.uid, member.gid))
        if not parts:
            if member.isdir():
                self._set_owner_mode(self.root, member)
                self.dir_times[()] = int(member.mtime * 1e9)
            return
        kind, hidden = whiteout_kind(parts[-1])
        if kind == "meta":
            self.stats.skip("aufs metadata %s" % member.name)
            return
        parent = self._dir(parts[:-1])
        if kind == "opaque":
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            self.stats.opaque_dirs += 1
            return
        if kind == "whiteout":
            self._whiteout(parent, parts[:-1] + (t.cast(str, hidden),), member)
            return
        if member.isdir():
            self._directory(parent, parts, member)
        elif member.isreg():
            self._regular(parent, parts, member, tar)
        elif member.issym():
            self._symlink(parent, parts, member)
        elif member.islnk():
            self._hardlink(parent, parts, member)
        elif member.ischr() or member.isblk() or member.isfifo():
            self._special(parent, parts, member)
        else:
            self.stats.skip("unsupported entry type %r: %s" % (member.type, member.name))

    def _whiteout(self, parent: int, parts: t.Tuple[str, ...], member: tarfile.TarInfo) -> None:
        try:
            existing = os.lstat(parts[-1], dir_fd=parent)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            # A file of this same layer wins: the OCI whiteout hides lower layers only.
            return
        os.mknod(parts[-1], stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
        os.chown(parts[-1], member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        mtime = int(member.mtime * 1e9)
        os.utime(parts[-1], ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)
        self.stats.whiteouts += 1

    def _directory(self, parent: int, parts: t.Tuple[str, ...], member: tarfile.TarInfo) -> None:
        if self._clear(parent, parts, keep_dir=True) is None:
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
        fd = self._dir(parts)
        self._set_owner_mode(fd, member)
        self._set_xattrs_fd(fd, member)
        self.dir_times[parts] = int(member.mtime * 1e9)

    def _regular(self, parent: int, parts: t.Tuple[str, ...], member: tarfile.TarInfo,
                 tar: tarfile.TarFile) -> None:
        self._clear(parent, parts)
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=parent)
        try:
            source = tar.extractfile(member)
            if source is not None and member.sparse is not None:
                _copy_sparse(source, fd, member)
            elif source is not None:
                _copy(source, fd)
            self._set_owner_mode(fd, member)
            self._set_xattrs_fd(fd, member)
            mtime = int(member.mtime * 1e9)
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)

    def _symlink(self, parent: int, parts: t.Tuple[str, ...], member: tarfile.TarInfo) -> None:
        if "\0" in member.linkname or member.linkname == "":
            raise UnsafeLayer("symlink %s has an empty or NUL target" % member.name)
        if symlink_escapes(parts, member.linkname):
            raise UnsafeLayer("symlink %s -> %s climbs above the layer root" % (member.name, member.linkname))
        self._clear(parent, parts)
        os.symlink(member.linkname, parts[-1], dir_fd=parent)
        os.chown(parts[-1], member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        mtime = int(member.mtime * 1e9)
        os.utime(parts[-1], ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)
        if member_xattrs(member)[0]:
            self.stats.skip("xattrs on symlink %s" % member.name)

    def _hardlink(self, parent: int, parts: t.Tuple[str, ...], member: tarfile.TarInfo) -> None:
        try:
            target = tuple(member_parts(member.linkname))
        except UnsafeLayer as exc:
            raise UnsafeLayer("hardlink %s -> %s points outside the layer (%s)" % (member.name, member.linkname, exc))
        if not target:
            raise UnsafeLayer("hardlink %s points at the layer root" % member.name)
        if whiteout_kind(target[-1])[0] != "entry":
            self.stats.skip("hardlink %s to a whiteout" % member.name)
            return
        if target == parts:
            return
        if target[:len(parts)] == parts:
            raise UnsafeLayer("hardlink %s -> %s: the target is inside the link itself"
                              % (member.name, member.linkname))
        target_parent = self._dir(target[:-1])
        try:
            info = os.lstat(target[-1], dir_fd=target_parent)
        except FileNotFoundError:
            raise UnsafeLayer("hardlink %s -> %s: the target is not in this layer" % (member.name, member.linkname))
        if stat.S_ISDIR(info.st_mode):
            raise UnsafeLayer("hardlink %s -> %s: the target is a directory" % (member.name, member.linkname))
        self._clear(parent, parts)
        parent = self._dir(parts[:-1])  # clearing may have dropped cached fds
        target_parent = self._dir(target[:-1])
        os.link(target[-1], parts[-1], src_dir_fd=target_parent, dst_dir_fd=parent, follow_symlinks=False)

    def _special(self, parent: int, parts: t.Tuple[str, ...], member: tarfile.TarInfo) -> None:
        self._clear(parent, parts)
        mode = member.mode & 0o7777
        if member.isfifo():
            os.mkfifo(parts[-1], 0o600, dir_fd=parent)
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(parts[-1], kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent)
        os.chown(parts[-1], member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        # The staging tree is private (0700) and the entry was just made, so this chmod meets no symlink.
        os.chmod(parts[-1], mode, dir_fd=parent)
        wanted, dropped = member_xattrs(member)
        for name in dropped:
            self.stats.skip("xattr %s on %s" % (name, member.name))
        for name, value in wanted.items():
            self._setxattr_path("%s/%s" % (mounts.fd_path(parent), parts[-1]), name, value, member.name)
        mtime = int(member.mtime * 1e9)
        os.utime(parts[-1], ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)

    # metadata --------------------------------------------------------------------------------

    @staticmethod
    def _set_owner_mode(fd: int, member: tarfile.TarInfo) -> None:
        os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears setuid/setgid

    def _set_xattrs_fd(self, fd: int, member: tarfile.TarInfo) -> None:
        wanted, dropped = member_xattrs(member)
        for name in dropped:
            self.stats.skip("xattr %s on %s" % (name, member.name))
        for name, value in wanted.items():
            try:
                os.setxattr(fd, name, value)
            except OSError as exc:
                self._xattr_failed(name, member.name, exc)

    def _setxattr_path(self, path: str, name: str, value: bytes, shown: str) -> None:
        try:
            os.setxattr(path, name, value, follow_symlinks=False)
        except OSError as exc:
            self._xattr_failed(name, shown, exc)

    def _xattr_failed(self, name: str, shown: str, exc: OSError) -> None:
        # SELinux labels and the like may not apply on this host; the file itself is still right.
        if exc.errno in (errno.EOPNOTSUPP, errno.EPERM, errno.EINVAL, errno.EACCES):
            self.stats.skip("xattr %s on %s: %s" % (name, shown, exc.strerror))
        else:
            raise exc

    def finish(self) -> None:
        """Directory mtimes last (deepest first): creating their entries changed them."""
        for parts in sorted(self.dir_times, key=len, reverse=True):
            self._trim_cache()
            mtime = self.dir_times[parts]
            fd = self._dir(parts)
            os.utime(fd, ns=(mtime, mtime))


def _copy(source: t.Any, fd: int) -> None:
    while True:
        chunk = source.read(layer_stream.COPY_CHUNK)
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]


def _copy_sparse(source: t.Any, fd: int, member: tarfile.TarInfo) -> None:
    """A sparse entry (GNU or PAX): only its data runs are written, at their offsets; the holes stay holes.

    Reads go to tarfile's unbuffered member file: a buffered read-ahead would
    move the (forward-only) stream past the next run, and seeking a hole reads
    nothing at all.
    """
    raw = getattr(source, "raw", source)
    for offset, length in member.sparse or ():
        raw.seek(offset)
        left = length
        while left > 0:
            chunk = raw.read(min(layer_stream.COPY_CHUNK, left))
            if not chunk:
                raise UnsafeLayer("sparse entry %s ends before its data (%d bytes missing at offset %d)"
                                  % (member.name, left, offset + length - left))
            view = memoryview(chunk)
            position = offset + length - left
            while view:
                written = os.pwrite(fd, view, position)
                view, position = view[written:], position + written
            left -= len(chunk)
    os.ftruncate(fd, member.size)


def unpack(raw: t.Any, root_fd: int, expected_digest: t.Optional[str] = None,
           expected_diff_id: t.Optional[str] = None, expected_size: t.Optional[int] = None,
           where: str = "layer", limit: t.Optional[int] = None) -> UnpackStats:
    """Unpack the layer blob readable from ``raw`` into the empty directory ``root_fd``.

    The digests are checked after the last byte; on a mismatch DigestMismatch
    is raised and the caller must throw the directory away (it is a staging
    directory, never the final one).  ``limit`` bounds both the uncompressed
    tar and the sizes its entries declare (sparse holes included): a layer
    past it is refused, naming ``where``, before the disk fills.
    """
    algorithm = (expected_digest or "sha256:").split(":", 1)[0]
    outer = layer_stream.HashingReader(raw, algorithm)
    head = outer.read(8)
    stats = UnpackStats(compression=layer_stream.detect_compression(head))
    stream = layer_stream.decompressed(layer_stream.PeekReader(outer, head), stats.compression)
    inner = layer_stream.HashingReader(stream, (expected_diff_id or "sha256:").split(":", 1)[0], limit=limit)
    extractor = _Extractor(root_fd, stats, limit)
    problem = ""
    try:
        try:
            with tarfile.open(fileobj=inner, mode="r|", errorlevel=1) as tar:  # type: ignore[call-overload]
                for member in tar:
                    extractor.add(member, tar)
            extractor.finish()
            inner.drain()
        except layer_stream.TooLarge as exc:
            raise layer_stream.TooLarge("%s is larger than max_layer_size (%d bytes): %s; refusing it"
                                        % (where, t.cast(int, limit), exc))
        except tarfile.TarError as exc:
            problem = "%s is not a valid tar stream: %s" % (where, exc)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise OSError(errno.ENOSPC, "no space left on the layer store's filesystem while unpacking %s "
                              "(%d entries, %d bytes of tar read)" % (where, stats.entries, inner.count))
            if not layer_stream.damaged(exc):
                raise  # a real I/O error while writing, not a damaged stream
            problem = "%s cannot be decompressed (%s): it is truncated or corrupt (%s)" % (where, stats.compression,
                                                                                           exc)
        except layer_stream.DAMAGED as exc:
            problem = "%s cannot be decompressed (%s): it is truncated or corrupt (%s)" % (where, stats.compression,
                                                                                           exc)
        outer.drain()  # the whole blob is hashed even when its content was bad: a digest mismatch is the root cause
    finally:
        extractor.close()
        try:
            layer_stream.close(stream)
        except KernelboxError as exc:
            problem = problem or str(exc)
    stats.compressed_digest, stats.compressed_size = outer.digest, outer.count
    stats.diff_id, stats.size = inner.digest, inner.count
    if expected_digest and outer.digest != expected_digest:
        raise DigestMismatch("%s does not match its digest: expected %s, read %s"
                             % (where, expected_digest, outer.digest))
    if problem:
        raise KernelboxError(problem)
    if expected_size is not None and outer.count != expected_size:
        raise DigestMismatch("%s is %d bytes, the manifest says %d" % (where, outer.count, expected_size))
    if expected_diff_id and inner.digest != expected_diff_id:
        raise DigestMismatch("%s: the uncompressed layer does not match its diff_id: expected %s, read %s"
                             % (where, expected_diff_id, inner.digest))
    return stats
