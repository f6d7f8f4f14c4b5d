# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: pure rules for OCI and Docker image metadata.

Digests, descriptors, manifest and index selection (by reference name and
platform), diff_ids and the runtime-relevant part of an image config.  No
file access: image_source reads the files and hands the JSON here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError


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


def load_json(raw: bytes, where: str) -> t.Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ImageError("%s is not valid JSON: %s" % (where, exc))
