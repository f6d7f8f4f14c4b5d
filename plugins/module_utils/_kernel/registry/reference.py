# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: image references, parsed and normalised as docker and podman do.

``[registry[:port]/]repository[:tag][@algorithm:hex]``:

* no registry (the first path component has no ``.`` or ``:`` and is not ``localhost``) means
  ``docker.io``; ``index.docker.io`` is ``docker.io`` too;
* a one-component repository on ``docker.io`` gets ``library/`` (``busybox`` is ``docker.io/library/busybox``);
* neither tag nor digest means ``:latest``; with a digest the digest decides what is pulled and a tag
  is kept only as a name;
* repositories are lower case, at most 255 characters with the registry, and a 64-hex-digit name is
  refused (it would be an image ID, not a name).

Pure functions; no network.
"""

from __future__ import annotations

import ipaddress
import re
import typing as t
from dataclasses import dataclass

from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_LEGACY_HUB_NAMES = ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
NAME_MAX = 255

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(r"(?:%s(?:\.%s)*|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?" % (_DOMAIN_LABEL, _DOMAIN_LABEL))
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z][a-z0-9]*(?:[-_+.][a-z][a-z0-9]*)*:[0-9a-f]{32,}")
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_IMAGE_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: ``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: t.Optional[str] = None
    digest: t.Optional[str] = None

    @property
    def name(self) -> str:
        """``registry/repository``, the repository's full name."""
        return "%s/%s" % (self.registry, self.repository)

    @property
    def tagged(self) -> t.Optional[str]:
        """``registry/repository:tag``, or None for a reference by digest alone."""
        return "%s:%s" % (self.name, self.tag) if self.tag else None

    @property
    def api_host(self) -> str:
        """Where the v2 API lives: Docker Hub's API is not at docker.io."""
        return DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def manifest_ref(self) -> str:
        """What goes after /manifests/: the digest when there is one (it decides), else the tag."""
        return self.digest or t.cast(str, self.tag)

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.registry)

    def by_digest(self, digest: str) -> str:
        """``registry/repository@digest``."""
        return "%s@%s" % (self.name, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text


def host_of(registry: str) -> str:
    """The host part of ``host[:port]`` or ``[v6]:port``, without brackets."""
    if registry.startswith("["):
        return registry[1:registry.index("]")]
    return registry.rsplit(":", 1)[0] if ":" in registry else registry


def is_loopback_host(registry: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (docker treats these as insecure registries by default)."""
    host = host_of(registry)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_registry(name: str) -> t.Tuple[str, str]:
    first, slash, rest = name.partition("/")
    if not slash or (not any(c in first for c in ".:[") and first != "localhost" and first == first.lower()):
        return DEFAULT_REGISTRY, name
    return first, rest


def normalise_registry(registry: str) -> str:
    """``index.docker.io`` and the Hub's API host are ``docker.io``; other hosts stay as given."""
    lowered = registry.lower()
    return DEFAULT_REGISTRY if lowered in _LEGACY_HUB_NAMES else registry


def parse(text: t.Any, option: str = "name") -> Reference:
    """Parse and normalise an image reference; raises ValidationError naming ``option``."""
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("%s: an image reference is required, like busybox:1.36 or registry.example.com/app:2"
                              % option)
    raw = text.strip()
    rest, at, digest = raw.partition("@")
    if at:
        digest = digest.lower()
        algorithm = digest.partition(":")[0]
        if not _DIGEST.fullmatch(digest) or len(digest.partition(":")[2]) != _DIGEST_HEX_LENGTH.get(algorithm, -1):
            raise ValidationError("%s: %r: %r is not a digest like sha256:<64 hex digits>" % (option, raw, digest))
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, _colon, tag = rest.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise ValidationError("%s: %r: the tag %r is not valid (letters, digits, '_', '.', '-'; at most 128)"
                                  % (option, raw, tag))
    registry, repository = _split_registry(rest)
    if not _DOMAIN.fullmatch(registry):
        raise ValidationError("%s: %r: %r is not a registry host[:port]" % (option, raw, registry))
    registry = normalise_registry(registry)
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = "library/" + repository
    _check_repository(repository, raw, option)
    if len(registry) + 1 + len(repository) > NAME_MAX:
        raise ValidationError("%s: %r: the name is longer than %d characters" % (option, raw, NAME_MAX))
    if not tag and not at:
        tag = "latest"
    return Reference(registry, repository, tag, digest or None)


def _check_repository(repository: str, raw: str, option: str) -> None:
    components = repository.split("/")
    for component in components:
        if not _COMPONENT.fullmatch(component):
            hint = " (repositories are lower case)" if component.lower() != component else ""
            raise ValidationError("%s: %r: %r is not a valid repository path component%s"
                                  % (option, raw, component, hint))
    if _IMAGE_ID.fullmatch(components[-1]) and len(components) == 2 and components[0] == "library":
        raise ValidationError("%s: %r looks like an image ID (64 hex digits), not a name" % (option, raw))


def looks_like_reference(text: str) -> bool:
    """Whether a name from an image file (an OCI ref.name, a docker RepoTag) is a full reference, not a bare tag."""
    if "/" not in text and ":" not in text:
        return False  # skopeo's oci:DIR:TAG writes bare tags ("kbt")
    try:
        parse(text)
    except ValidationError:
        return False
    return True
