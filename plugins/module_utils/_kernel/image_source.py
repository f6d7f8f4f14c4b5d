# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: container images read from local files, never from a registry.

Formats:

* ``oci-layout``: an OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/``),
  as ``skopeo copy ... oci:DIR`` writes it;
* ``oci-archive``: the same as a tar (``podman save --format oci-archive``, ``skopeo copy ... oci-archive:``);
* ``docker-archive``: a ``docker save`` / ``podman save --format docker-archive`` tar (``manifest.json``),
  or the directory it unpacks to;
* ``rootfs-tar``: a plain root filesystem tarball (uncompressed, gzip, xz, bzip2 or zstd), one layer.

Everything reachable by digest is verified against it while being read: the
manifest, the config (small, checked here) and each layer blob (checked while
it is unpacked, see layer_unpack).  Layers are listed in image order, **base
first**, as manifests list them; the overlay lower list is the reverse.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import tarfile
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import mounts
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.image_manifest import (
    INDEX_TYPES, REF_NAME, ImageError, check_descriptor, diff_ids_of, digest_of, digest_parts, host_platform,
    load_json, parse_manifest, platform_of, reference_matches, select_descriptor)

FORMATS = ("oci-layout", "oci-archive", "docker-archive", "rootfs-tar")
MAX_METADATA = 4 << 20  # an index, manifest or config larger than this is not an image


# --- where blobs come from ------------------------------------------------------------------------

class Files:
    """Named files of an image, from a directory or from a tar archive."""

    description = ""

    def open(self, name: str) -> t.BinaryIO:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def read_small(self, name: str) -> bytes:
        if self.size(name) > MAX_METADATA:
            raise ImageError("%s in %s is larger than %d bytes; not image metadata"
                             % (name, self.description, MAX_METADATA))
        with self.open(name) as handle:
            return handle.read(MAX_METADATA + 1)

    def close(self) -> None:
        pass


def _archive_name(name: str) -> str:
    """A normalised archive-relative name; '..' and absolute names are refused."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts:
        raise ImageError("refusing the archive path %r" % name)
    return "/".join(parts)


class DirFiles(Files):
    """Files under an image directory, opened without following any symlink."""

    def __init__(self, path: str) -> None:
        self.description = path
        self.root = mounts.open_dir(path)

    def _open(self, name: str, flags: int) -> int:
        parts = _archive_name(name).split("/")
        fd = os.open(mounts.fd_path(self.root), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                child = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = child
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        finally:
            os.close(fd)

    def open(self, name: str) -> t.BinaryIO:
        try:
            fd = self._open(name, os.O_RDONLY)
        except OSError as exc:
            raise ImageError("%s/%s cannot be opened: %s" % (self.description, name, exc.strerror))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ImageError("%s/%s is not a regular file" % (self.description, name))
        return os.fdopen(fd, "rb", buffering=1 << 20)

    def exists(self, name: str) -> bool:
        try:
            os.close(self._open(name, os.O_PATH))
            return True
        except (OSError, ImageError):
            return False

    def size(self, name: str) -> int:
        with self.open(name) as handle:
            return os.fstat(handle.fileno()).st_size

    def close(self) -> None:
        os.close(self.root)


class TarFiles(Files):
    """Members of a tar archive, indexed once; symlinked members are resolved inside the archive."""

    def __init__(self, path: str) -> None:
        self.description = path
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members = {}
            for member in self.tar:
                try:
                    self.members[_archive_name(member.name)] = member
                except ImageError:
                    continue  # '.' itself, or names we would never look up
        except (tarfile.TarError, OSError) as exc:
            raise ImageError("%s is not a readable tar archive: %s" % (path, exc))

    def _member(self, name: str) -> tarfile.TarInfo:
        key = _archive_name(name)
        for _hop in range(8):
            member = self.members.get(key)
            if member is None:
                raise ImageError("%s is missing from %s" % (name, self.description))
            if member.issym():
                key = _archive_name(posixpath.join(posixpath.dirname(key), member.linkname))
            elif member.islnk():
                key = _archive_name(member.linkname)
            elif member.isfile():
                return member
            else:
                raise ImageError("%s in %s is not a file" % (name, self.description))
        raise ImageError("%s in %s: too many links" % (name, self.description))

    def open(self, name: str) -> t.BinaryIO:
        handle = self.tar.extractfile(self._member(name))
        if handle is None:
            raise ImageError("%s in %s cannot be read" % (name, self.description))
        return t.cast(t.BinaryIO, handle)

    def exists(self, name: str) -> bool:
        try:
            self._member(name)
            return True
        except ImageError:
            return False

    def size(self, name: str) -> int:
        return self._member(name).size

    def close(self) -> None:
        self.tar.close()


# --- images ---------------------------------------------------------------------------------------

@dataclass
class Layer:
    """One layer of an image.  ``digest`` is the blob as stored (maybe compressed), ``diff_id`` the tar."""

    index: int  # 0 = base
    media_type: str
    digest: t.Optional[str]
    diff_id: t.Optional[str]
    size: t.Optional[int]
    files: Files
    name: str  # the blob's name in ``files``

    def open(self) -> t.BinaryIO:
        return self.files.open(self.name)

    @property
    def where(self) -> str:
        return "%s in %s" % (self.name, self.files.description)


@dataclass
class Image:
    format: str
    source: str
    layers: t.List[Layer]  # base first
    config: t.Dict[str, t.Any] = field(default_factory=dict)
    manifest_digest: t.Optional[str] = None
    config_digest: t.Optional[str] = None
    reference: t.Optional[str] = None
    platform: t.Optional[str] = None
    files: t.Optional[Files] = None

    def close(self) -> None:
        if self.files is not None:
            self.files.close()


def _verified_blob(files: Files, descriptor: t.Mapping[str, t.Any], what: str) -> bytes:
    algorithm, hexpart = digest_parts(descriptor["digest"])
    name = "blobs/%s/%s" % (algorithm, hexpart)
    if not files.exists(name):
        raise ImageError("%s %s is missing from %s" % (what, descriptor["digest"], files.description))
    raw = files.read_small(name)
    if descriptor.get("size") is not None and len(raw) != descriptor["size"]:
        raise ImageError("%s %s is %d bytes, its descriptor says %d" % (what, descriptor["digest"], len(raw),
                                                                        descriptor["size"]))
    if digest_of(raw, algorithm) != descriptor["digest"]:
        raise ImageError("%s %s in %s does not match its digest" % (what, descriptor["digest"], files.description))
    return raw


def _oci_image(files: Files, fmt: str, reference: t.Optional[str], platform: str) -> Image:
    layout = load_json(files.read_small("oci-layout"), "oci-layout") if files.exists("oci-layout") else {}
    if layout.get("imageLayoutVersion", "1.0.0") != "1.0.0":
        raise ImageError("%s: unsupported OCI layout version %r" % (files.description, layout.get("imageLayoutVersion")))
    index = load_json(files.read_small("index.json"), "index.json")
    where = "%s index.json" % files.description
    descriptors = [check_descriptor(d, where) for d in (index.get("manifests") or [])]
    chosen = select_descriptor(descriptors, reference, platform, where)
    ref_name = (chosen.get("annotations") or {}).get(REF_NAME) or reference
    for _depth in range(4):  # follow nested indexes (a multi-platform image inside the layout)
        media = chosen.get("mediaType", "")
        raw = _verified_blob(files, chosen, "manifest")
        data = load_json(raw, "manifest %s" % chosen["digest"])
        if media in INDEX_TYPES or data.get("mediaType") in INDEX_TYPES:
            nested = [check_descriptor(d, "index " + chosen["digest"]) for d in (data.get("manifests") or [])]
            chosen = select_descriptor(nested, None, platform, "index %s" % chosen["digest"])
            continue
        config_desc, layer_descs = parse_manifest(data, "manifest %s" % chosen["digest"])
        config = load_json(_verified_blob(files, config_desc, "config"), "config %s" % config_desc["digest"])
        diff_ids = diff_ids_of(config, len(layer_descs), "config %s" % config_desc["digest"])
        layers = []
        for position, (desc, diff_id) in enumerate(zip(layer_descs, diff_ids)):
            algorithm, hexpart = digest_parts(desc["digest"])
            name = "blobs/%s/%s" % (algorithm, hexpart)
            if not files.exists(name):
                raise ImageError("layer %d (%s) is missing from %s%s" % (
                    position, desc["digest"], files.description,
                    " (a foreign layer: fetch it into the archive first)" if "foreign" in desc["mediaType"] else ""))
            layers.append(Layer(position, desc["mediaType"], desc["digest"], diff_id, desc.get("size"), files, name))
        return Image(fmt, files.description, layers, config, chosen["digest"], config_desc["digest"], ref_name,
                     _config_platform(config) or platform, files)
    raise ImageError("%s: image indexes nested too deep" % files.description)


def _config_platform(config: t.Mapping[str, t.Any]) -> t.Optional[str]:
    if not config.get("os") or not config.get("architecture"):
        return None
    return platform_of(config)


_HEX_NAME = re.compile(r"(?:blobs/sha256/|)([0-9a-f]{64})(?:\.json|\.tar|)")


def _docker_image(files: Files, reference: t.Optional[str]) -> Image:
    entries = load_json(files.read_small("manifest.json"), "manifest.json")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ImageError("%s: manifest.json is not a docker save manifest" % files.description)
    if reference:
        entries = [e for e in entries if any(reference_matches(reference, tag) for tag in (e.get("RepoTags") or []))]
        if not entries:
            raise ImageError("%s: no image tagged %r" % (files.description, reference))
    if len(entries) != 1:
        raise ImageError("%s holds %d images; choose one with reference (tags: %s)" % (
            files.description, len(entries), ", ".join(tag for e in entries for tag in (e.get("RepoTags") or []))))
    entry = entries[0]
    config_name = entry.get("Config")
    if not isinstance(config_name, str):
        raise ImageError("%s: manifest.json names no Config" % files.description)
    raw = files.read_small(config_name)
    config_digest = digest_of(raw)
    match = _HEX_NAME.fullmatch(_archive_name(config_name))
    if match and "sha256:" + match.group(1) != config_digest:
        raise ImageError("%s: config %s does not match its name" % (files.description, config_name))
    config = load_json(raw, config_name)
    names = entry.get("Layers") or []
    diff_ids = diff_ids_of(config, len(names), "config %s" % config_name)
    layers = []
    for position, (name, diff_id) in enumerate(zip(names, diff_ids)):
        if not isinstance(name, str) or not files.exists(name):
            raise ImageError("%s: layer %r is missing" % (files.description, name))
        blob = _HEX_NAME.fullmatch(_archive_name(name))
        # docker 25+ stores layers as blobs/sha256/<digest>; older saves name them by diff_id or by a v1 id
        digest = "sha256:" + blob.group(1) if blob and name.startswith("blobs/") else None
        layers.append(Layer(position, "application/vnd.docker.image.rootfs.diff.tar", digest, diff_id,
                            files.size(name), files, name))
    tags = entry.get("RepoTags") or []
    return Image("docker-archive", files.description, layers, config, None, config_digest,
                 reference or (tags[0] if tags else None), _config_platform(config), files)


def _rootfs_image(path: str) -> Image:
    files = DirFiles(os.path.dirname(path) or "/")
    layer = Layer(0, "rootfs-tar", None, None, files.size(os.path.basename(path)), files, os.path.basename(path))
    return Image("rootfs-tar", path, [layer], {}, None, None, None, host_platform(), files)


def detect_format(path: str) -> str:
    """oci-layout / docker-archive for directories; for files, what the top-level members say."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "index.json")):
            return "oci-layout"
        if os.path.exists(os.path.join(path, "manifest.json")):
            return "docker-archive"
        raise ImageError("%s is a directory without index.json (OCI layout) or manifest.json (docker save)" % path)
    with open(path, "rb") as handle:
        head = handle.read(512)
    if len(head) < 512 or head[257:262] != b"ustar":
        return "rootfs-tar"  # compressed (or not a tar at all: unpacking will say so)
    names = set()
    try:
        with tarfile.open(path, "r:") as tar:
            for count, member in enumerate(tar):
                parts = [part for part in member.name.split("/") if part not in ("", ".")]
                if len(parts) == 1:
                    names.add(parts[0])
                if count > 64 and not names & {"oci-layout", "index.json", "manifest.json"}:
                    break  # image archives put their metadata near the start; this is a rootfs
    except tarfile.TarError:
        return "rootfs-tar"
    if "index.json" in names and "oci-layout" in names:
        return "oci-archive"
    if "manifest.json" in names and ("repositories" in names or
                                     any(n.endswith(".json") and n != "manifest.json" for n in names)):
        return "docker-archive"
    return "rootfs-tar"


def open_image(path: str, fmt: str = "auto", reference: t.Optional[str] = None,
               platform: t.Optional[str] = None) -> Image:
    """Read an image's metadata (verifying it) and return its layers, base first.  Call ``close()`` after."""
    platform = platform or host_platform()
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "rootfs-tar":
        if os.path.isdir(path):
            raise ImageError("%s is a directory; format rootfs-tar needs a tar file" % path)
        return _rootfs_image(path)
    files: Files = DirFiles(path) if os.path.isdir(path) else TarFiles(path)
    try:
        if fmt in ("oci-layout", "oci-archive"):
            return _oci_image(files, "oci-layout" if os.path.isdir(path) else "oci-archive", reference, platform)
        if fmt == "docker-archive":
            return _docker_image(files, reference)
        raise ImageError("unknown image format %r" % fmt)
    except BaseException:
        files.close()
        raise
