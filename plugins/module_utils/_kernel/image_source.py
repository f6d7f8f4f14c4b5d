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

import hashlib
import json
import os
import posixpath
import re
import stat
import tarfile
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import mounts
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

FORMATS = ("oci-layout", "oci-archive", "docker-archive", "rootfs-tar")
MAX_METADATA = 4 << 20  # an index, manifest or config larger than this is not an image

MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
REF_NAME = "org.opencontainers.image.ref.name"
_DIGEST = re.compile(r"(?P<algorithm>sha256|sha512):(?P<hex>[0-9a-f]+)")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm/v7", "armv6l": "arm/v6", "i686": "386",
           "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


class ImageError(KernelboxError):
    """The image files are unusable: missing blobs, bad JSON, digests that do not match."""


# --- pure helpers -------------------------------------------------------------------------------

def normalise_digest(value: t.Any, option: str = "digest") -> str:
    """'sha256:<64 hex>' (a bare 64-hex value gets the sha256 prefix); raises ValidationError."""
    text = str(value).strip().lower()
    if ":" not in text:
        text = "sha256:" + text
    match = _DIGEST.fullmatch(text)
    if not match or len(match.group("hex")) != _HEX_LENGTH[match.group("algorithm")]:
        raise ValidationError("%s: %r is not a digest like sha256:<64 hex digits>" % (option, value))
    return text


def digest_parts(digest: str) -> t.Tuple[str, str]:
    """('sha256', hex) of a digest that passed normalise_digest."""
    algorithm, _sep, hexpart = digest.partition(":")
    return algorithm, hexpart


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return "%s:%s" % (algorithm, hashlib.new(algorithm, data).hexdigest())


def host_platform() -> str:
    """This machine as an OCI platform: 'linux/amd64', 'linux/arm64', 'linux/arm/v7'..."""
    machine = os.uname().machine
    return "linux/" + _GOARCH.get(machine, machine)


def platform_of(descriptor_platform: t.Mapping[str, t.Any]) -> str:
    text = "%s/%s" % (descriptor_platform.get("os", ""), descriptor_platform.get("architecture", ""))
    if descriptor_platform.get("variant"):
        text += "/" + descriptor_platform["variant"]
    return text


def platform_matches(wanted: str, offered: str) -> bool:
    """'linux/arm64' matches 'linux/arm64/v8'; a wanted variant must match exactly."""
    wanted_parts, offered_parts = wanted.split("/"), offered.split("/")
    if wanted_parts[:2] != offered_parts[:2]:
        return False
    return len(wanted_parts) < 3 or wanted_parts[2:] == offered_parts[2:]


def reference_matches(reference: str, name: str) -> bool:
    """'web' matches 'web:latest', 'localhost/web:latest' and 'docker.io/library/web:latest'; tags must agree."""
    def split(text: str) -> t.Tuple[str, str]:
        last = text.rsplit("/", 1)[-1]
        if ":" in last:
            repo, tag = text.rsplit(":", 1)
            return repo, tag
        return text, "latest"

    if reference == name:
        return True
    if ":" not in reference.rsplit("/", 1)[-1] and "/" not in reference and ":" not in name and "/" not in name:
        return False  # both bare tags (skopeo oci:DIR:TAG) and different
    ref_repo, ref_tag = split(reference)
    name_repo, name_tag = split(name)
    if ref_tag != name_tag:
        return False
    return name_repo == ref_repo or name_repo.endswith("/" + ref_repo)


def check_descriptor(descriptor: t.Any, what: str) -> t.Dict[str, t.Any]:
    """A descriptor with a valid digest; size must be an int when present."""
    if not isinstance(descriptor, dict) or "digest" not in descriptor:
        raise ImageError("%s: not a descriptor with a digest: %r" % (what, descriptor))
    try:
        digest = normalise_digest(descriptor["digest"], what)
    except ValidationError as exc:
        raise ImageError(str(exc))
    size = descriptor.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ImageError("%s: bad size %r" % (what, size))
    result = dict(descriptor)
    result["digest"] = digest
    return result


def select_descriptor(descriptors: t.Sequence[t.Mapping[str, t.Any]], reference: t.Optional[str],
                      platform: str, where: str) -> t.Dict[str, t.Any]:
    """Pick one manifest descriptor of an index by reference name, then by platform."""
    candidates = list(descriptors)
    if reference:
        named = [d for d in candidates if reference_matches(reference, (d.get("annotations") or {}).get(REF_NAME, ""))]
        if not named:
            names = sorted({(d.get("annotations") or {}).get(REF_NAME, "") for d in candidates} - {""})
            raise ImageError("%s: no image named %r; it holds %s" % (where, reference, ", ".join(names) or "no names"))
        candidates = named
    with_platform = [d for d in candidates if d.get("platform")]
    if with_platform:
        fitting = [d for d in with_platform if platform_matches(platform, platform_of(d["platform"]))]
        if not fitting and len(candidates) == len(with_platform):
            raise ImageError("%s: no image for platform %s; it has %s" % (
                where, platform, ", ".join(sorted({platform_of(d["platform"]) for d in with_platform}))))
        candidates = fitting + [d for d in candidates if not d.get("platform")]
    if len(candidates) != 1:
        names = [(d.get("annotations") or {}).get(REF_NAME) or d.get("digest") for d in candidates]
        raise ImageError("%s: %d images match; choose one with reference (candidates: %s)"
                         % (where, len(candidates), ", ".join(str(n) for n in names) or "none"))
    return dict(candidates[0])


def parse_manifest(data: t.Mapping[str, t.Any], where: str) -> t.Tuple[t.Dict[str, t.Any], t.List[t.Dict[str, t.Any]]]:
    """(config descriptor, layer descriptors base first) of an OCI or Docker v2 manifest."""
    media_type = data.get("mediaType", MANIFEST_TYPES[0])
    if data.get("schemaVersion") != 2 or media_type not in MANIFEST_TYPES:
        raise ImageError("%s: not an image manifest (schemaVersion %r, mediaType %r)"
                         % (where, data.get("schemaVersion"), media_type))
    config = check_descriptor(data.get("config"), where + " config")
    layers = []
    for index, layer in enumerate(data.get("layers") or []):
        layer = check_descriptor(layer, "%s layer %d" % (where, index))
        media = layer.get("mediaType", "")
        if media not in LAYER_TYPES:
            raise ImageError("%s layer %d: unsupported media type %r (encrypted or not a filesystem layer)"
                             % (where, index, media))
        layers.append(layer)
    return config, layers


def diff_ids_of(config: t.Mapping[str, t.Any], layer_count: int, where: str) -> t.List[str]:
    rootfs = config.get("rootfs") or {}
    raw = rootfs.get("diff_ids")
    if not isinstance(raw, list):
        raise ImageError("%s: the image config has no rootfs.diff_ids" % where)
    if len(raw) != layer_count:
        raise ImageError("%s: the config lists %d diff_ids for %d layers" % (where, len(raw), layer_count))
    try:
        return [normalise_digest(value, "diff_id") for value in raw]
    except ValidationError as exc:
        raise ImageError("%s: %s" % (where, exc))


def runtime_config(config: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """What a runtime needs from an image config, with OCI's names and empty values filled in."""
    inner = config.get("config") or config.get("container_config") or {}
    return {
        "Entrypoint": list(inner.get("Entrypoint") or []),
        "Cmd": list(inner.get("Cmd") or []),
        "Env": list(inner.get("Env") or []),
        "WorkingDir": inner.get("WorkingDir") or "",
        "User": inner.get("User") or "",
        "StopSignal": inner.get("StopSignal") or "",
        "Labels": dict(inner.get("Labels") or {}),
    }


def process_of(summary: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """The image's default process: args = Entrypoint + Cmd, as an OCI runtime would run it."""
    return {"args": list(summary["Entrypoint"]) + list(summary["Cmd"]), "env": list(summary["Env"]),
            "cwd": summary["WorkingDir"] or "/", "user": summary["User"] or "0"}


def _load_json(raw: bytes, where: str) -> t.Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ImageError("%s is not valid JSON: %s" % (where, exc))


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
    layout = _load_json(files.read_small("oci-layout"), "oci-layout") if files.exists("oci-layout") else {}
    if layout.get("imageLayoutVersion", "1.0.0") != "1.0.0":
        raise ImageError("%s: unsupported OCI layout version %r" % (files.description, layout.get("imageLayoutVersion")))
    index = _load_json(files.read_small("index.json"), "index.json")
    where = "%s index.json" % files.description
    descriptors = [check_descriptor(d, where) for d in (index.get("manifests") or [])]
    chosen = select_descriptor(descriptors, reference, platform, where)
    ref_name = (chosen.get("annotations") or {}).get(REF_NAME) or reference
    for _depth in range(4):  # follow nested indexes (a multi-platform image inside the layout)
        media = chosen.get("mediaType", "")
        raw = _verified_blob(files, chosen, "manifest")
        data = _load_json(raw, "manifest %s" % chosen["digest"])
        if media in INDEX_TYPES or data.get("mediaType") in INDEX_TYPES:
            nested = [check_descriptor(d, "index " + chosen["digest"]) for d in (data.get("manifests") or [])]
            chosen = select_descriptor(nested, None, platform, "index %s" % chosen["digest"])
            continue
        config_desc, layer_descs = parse_manifest(data, "manifest %s" % chosen["digest"])
        config = _load_json(_verified_blob(files, config_desc, "config"), "config %s" % config_desc["digest"])
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
    entries = _load_json(files.read_small("manifest.json"), "manifest.json")
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
    config = _load_json(raw, config_name)
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
    layer = Layer(0, "rootfs-tar", None, None, None, files, os.path.basename(path))
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
