# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the options of modules that pull images by reference."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  pull:
    description:
      - When to ask the registry, for an image given by reference, as C(podman pull --policy).
      - V(missing) pulls only when the store has no image by that name for the platform (or lacks one of its
        layers); a second run does not touch the network.
      - V(always) asks the registry for the reference's current digest (one C(HEAD) request, which Docker Hub
        does not count against its rate limit) and pulls when it moved. The run is changed only when the digest
        moved or something was missing.
      - V(never) uses the store only, and fails when the image is not there.
      - A reference with a digest never moves, so V(always) behaves as V(missing) for it.
    type: str
    choices: [missing, always, never]
    default: missing
  platform:
    description:
      - The platform to pick from a multi-platform image (an OCI index or a Docker manifest list), as
        C(os/architecture[/variant]). Defaults to the target's own (for example C(linux/amd64)).
      - An image for another platform is unpacked with a warning; its programs may not run on the target.
    type: str
  username:
    description:
      - The registry user, for registries that ask for a login (HTTP basic authentication, or a token service
        that wants credentials). Requires O(password).
      - Without it, credentials come from O(auth_file) or the usual auth files, and anonymous tokens are used
        where the registry offers them (Docker Hub's public images).
    type: str
  password:
    description:
      - The password or access token for O(username). It is never logged.
    type: str
  auth_file:
    description:
      - A containers-auth.json(5) or docker C(config.json) file with C(auths) entries (C(podman login) and
        C(docker login) write them). The entry for the repository, or the nearest parent path, or the registry,
        is used.
      - Default, in podman's order, the first of C($REGISTRY_AUTH_FILE), C(/run/containers/0/auth.json),
        C(~/.config/containers/auth.json), C(~/.docker/config.json) and C(~/.dockercfg) (for the target user)
        with an entry. Credential helpers (C(credHelpers), C(credsStore)) are not run; a warning names them.
    type: path
  ca_path:
    description:
      - A PEM file of CA certificates to verify the registry's TLS certificate with, instead of the system's.
    type: path
  validate_certs:
    description:
      - Verify the registry's TLS certificate. Set to V(false) only for an insecure registry; plain HTTP is then
        used when HTTPS fails, as C(podman --tls-verify=false) does.
      - Registries on loopback (C(localhost), C(127.0.0.0/8), C(::1)) may use plain HTTP without it, as with docker.
    type: bool
    default: true
  timeout:
    description:
      - Seconds any one network operation (connect, a read) may take. Transient failures (connection errors,
        timeouts, HTTP 408, 429 and 5xx) are retried three times with a growing back-off, and an interrupted
        layer download resumes where it stopped.
    type: int
    default: 30
notes:
  - HTTP goes through Ansible's own client, so C(https_proxy), C(http_proxy) and C(no_proxy) in the target's
    environment apply, and redirects (to a blob store or CDN) are followed without the credentials.
"""
