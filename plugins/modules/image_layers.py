#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_layers
short_description: Pull or unpack a container image into content-addressed overlay layers
version_added: 0.1.0
description:
  - Unpacks each layer of a container image into its own directory of a layer store, named by the layer's sha256
    (its C(diff_id)), ready to be the lower directories of M(kernelbox.containers.overlay_rootfs). The image
    comes from a registry by reference (O(name)), or from files on the target (O(src)). No container engine is
    involved.
  - "O(name) pulls over the OCI distribution API (v2) from any registry: Docker Hub (C(busybox) means
    C(docker.io/library/busybox:latest)), quay.io, a private registry. OCI and Docker v2 manifests and indexes
    are read; the target's own platform is picked from a multi-platform image unless O(platform) says otherwise.
    Missing layers are downloaded concurrently, streamed to disk with their digests computed as they arrive,
    retried on transient errors and resumed with range requests; layers already in the store are skipped. The
    image is recorded in the store with its name and digest (see M(kernelbox.containers.image_info))."
  - "O(src) reads files: an OCI image layout directory (C(skopeo copy ... oci:DIR)), an OCI archive
    (C(podman save --format oci-archive), C(skopeo copy ... oci-archive:FILE)), a C(docker save) or
    C(podman save --format docker-archive) tar (or the directory it unpacks to), and a plain root filesystem
    tarball (uncompressed, gzip, xz, bzip2 or zstd), which becomes a single layer."
  - Digests are verified while reading, before a layer is accepted. The manifest and config must match the digests
    that reference them, each layer blob must match its manifest digest and size, and the uncompressed stream
    must match the C(diff_id) from the image config. A layer that fails is thrown away.
  - Whiteouts are converted to the overlayfs form. C(.wh.NAME) becomes a 0/0 character device NAME, and
    C(.wh..wh..opq) becomes the C(trusted.overlay.opaque=y) xattr on its directory.
  - "Extraction is safe against hostile layers: an entry with an absolute path or C(..), a hardlink to something
    outside the layer, a relative symlink that climbs above the layer root, or an entry written through a symlink
    or file the layer itself created makes the layer refused, and nothing is ever written outside the layer
    directory. Every entry is created through directory file descriptors with C(O_NOFOLLOW). Absolute symlink
    targets are kept as they are: a container resolves them inside its own root. Other C(trusted.overlay.*) and
    C(user.overlay.*) xattrs in a layer are dropped so an image cannot steer overlayfs."
  - Ownership (numeric), modes including setuid bits, timestamps, xattrs, device nodes and fifos are preserved.
    Sparse files (GNU or PAX sparse entries) keep their holes. The store root is mode 0700, so host users cannot
    reach setuid programs or device nodes in the layers.
  - A layer larger than O(max_layer_size), a truncated or corrupt compressed stream, or a full disk fails the task
    with a message naming the layer (the blob or tarball). A store the task had to create is removed again when
    nothing could be unpacked into it.
  - A layer is unpacked into a staging directory, verified, synced, given a completion marker and renamed into
    place. A layer directory without a valid marker (a crash, hands-on damage) is unpacked again, and staging
    directories left by interrupted runs are removed. A layer already in the store is left alone.
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes
  - kernelbox.containers._requirements
  - kernelbox.containers._registry
options:
  name:
    description:
      - The image to pull, as C([registry[:port]/]repository[:tag][@digest]), normalised as docker and podman do
        (no registry means C(docker.io), a one-part repository there gets C(library/), no tag means C(latest)).
      - A digest pins the content; a tag is looked up in the registry according to O(pull).
      - With O(state=absent), the name is taken off the store. The image and the layers no other image uses go
        with its last tag; a layer an overlay still uses makes the run fail before anything is removed.
      - Exactly one of O(name) and O(src) is required.
    type: str
  src:
    description:
      - The image on the target, a directory or a file (see the accepted inputs above).
    type: path
  format:
    description:
      - What O(src) is. V(auto) decides from the content. A directory with C(index.json) is an OCI layout, one
        with C(manifest.json) is an unpacked C(docker save). A tar with C(oci-layout) and C(index.json) is an
        OCI archive, one with C(manifest.json) is a C(docker save) archive, and anything else (including
        compressed tarballs) is a root filesystem tarball.
    type: str
    choices: [auto, oci-layout, oci-archive, docker-archive, rootfs-tar]
    default: auto
  reference:
    description:
      - Which image to take when O(src) holds several. It is matched against the OCI C(org.opencontainers.image.ref.name)
        annotation or the docker C(RepoTags), so C(web) matches C(localhost/web:latest).
    type: str
  digest:
    description:
      - Pin the image. The run fails unless it matches, before anything is unpacked or downloaded.
      - For O(name), the digest the reference resolves to (an index or manifest digest, RV(digest)), or the
        platform's manifest digest.
      - For OCI inputs this is the manifest digest, for C(docker save) archives the config digest (the image ID),
        and for root filesystem tarballs the sha256 of the file.
    type: str
  store:
    description:
      - The layer store directory. Created with mode 0700 if missing; it must be a filesystem that supports
        C(trusted.*) xattrs and device nodes (ext4, xfs, btrfs, tmpfs).
      - Keep the path short. overlayfs takes all lower paths in one page of mount options, which allows about
        35 layers with the default store.
    type: path
    default: /var/lib/kernelbox/layers
  max_layer_size:
    description:
      - The largest a layer may be, as a size such as V(16G) or V(512M), or bytes; V(0) means no limit.
      - Checked against the size a manifest declares for the blob, against the uncompressed tar while it is read
        (a gzip bomb is refused after this many bytes, not when the disk is full), and against the sizes its
        entries declare (holes of sparse files included). The task fails naming the layer, and nothing of it is
        kept.
    type: str
    default: 16G
  state:
    description:
      - V(present) unpacks (and for O(name) downloads) the layers that are not in the store yet.
      - V(absent) with O(src) removes this image's record and its layers from the store, except the layers another
        recorded image uses. It is refused while an overlay uses one of them.
      - V(absent) with O(name) takes the name off the store, and with its last tag the image and the layers no
        other image uses. It never uses the network.
    type: str
    choices: [present, absent]
    default: present
notes:
  - O(reference) and O(format) apply to O(src) only; with O(name) put the tag or digest in the name.
  - Requires root on the target (device nodes, ownership and C(trusted.*) xattrs).
  - zstd layers need Python 3.14, the C(zstandard) Python module, or the C(zstd) program on the target.
  - Concurrent runs on one store are serialised by a lock file.
seealso:
  - module: kernelbox.containers.overlay_rootfs
  - name: OCI distribution specification
    description: The registry API O(name) pulls with.
    link: https://github.com/opencontainers/distribution-spec/blob/main/spec.md
  - name: OCI image layout specification
    description: The directory and archive format read by this module.
    link: https://github.com/opencontainers/image-spec/blob/main/image-layout.md
  - name: OCI image layer specification
    description: Layer media types and whiteouts.
    link: https://github.com/opencontainers/image-spec/blob/main/layer.md
"""

EXAMPLES = r"""
- name: Pull an image from Docker Hub (busybox is docker.io/library/busybox:latest)
  kernelbox.containers.image_layers:
    name: busybox:1.36
  register: image

- name: Pull from a private registry with a login, and pin what the tag resolved to
  kernelbox.containers.image_layers:
    name: registry.example.com/team/web:2.4
    username: deploy
    password: "{{ registry_password }}"
  register: web

- name: The same content whatever the tag does since, with the login podman login saved
  kernelbox.containers.image_layers:
    name: "registry.example.com/team/web@{{ web.digest }}"
    auth_file: /run/containers/0/auth.json

- name: Follow a moving tag (changed only when the registry's digest moved)
  kernelbox.containers.image_layers:
    name: quay.io/prometheus/node-exporter:latest
    pull: always

- name: The arm64 image of a multi-platform index, from a registry with its own CA
  kernelbox.containers.image_layers:
    name: registry.internal:5000/tools/debug:1
    platform: linux/arm64
    ca_path: /etc/pki/internal-ca.pem

- name: An insecure (plain HTTP or self-signed) registry, only when asked
  kernelbox.containers.image_layers:
    name: 10.0.0.5:5000/app:dev
    validate_certs: false

- name: Take the name off the store (the image and its unshared layers go with its last tag)
  kernelbox.containers.image_layers:
    name: busybox:1.36
    state: absent

- name: Unpack an image saved with podman save --format oci-archive, pinned by its manifest digest
  kernelbox.containers.image_layers:
    src: /srv/images/web.oci.tar
    digest: sha256:75e05a757aa41f13e46f93178fefd2293efa1821f43f2f81ccbc17ec8add3753
  register: image

- name: Mount it as a container root filesystem
  kernelbox.containers.overlay_rootfs:
    lower: "{{ image.lower }}"
    upper: /var/lib/kernelbox/rootfs/web/upper
    work: /var/lib/kernelbox/rootfs/web/work
    merged: /var/lib/kernelbox/rootfs/web/merged

- name: Show what the image would run
  ansible.builtin.debug:
    msg: "{{ image.process.args | join(' ') }} in {{ image.process.cwd }} as {{ image.process.user }}"

- name: One image out of a docker save archive holding several
  kernelbox.containers.image_layers:
    src: /srv/images/bundle.tar
    reference: registry.example.com/tools:1.4

- name: A plain rootfs tarball becomes one layer
  kernelbox.containers.image_layers:
    src: /srv/images/alpine-minirootfs.tar.gz

- name: An image from an untrusted source, with a tighter bound on each layer's size
  kernelbox.containers.image_layers:
    src: /srv/incoming/tool.oci.tar
    max_layer_size: 2G
"""

RETURN = r"""
lower:
  description:
    - The layer directories, B(topmost first), ready for O(kernelbox.containers.overlay_rootfs#module:lower).
    - This is the reverse of RV(layers), which follows the image's own order (base first). Empty with O(state=absent).
  returned: always
  type: list
  elements: str
  sample: ["/var/lib/kernelbox/layers/sha256/1c65.../diff", "/var/lib/kernelbox/layers/sha256/0a8e.../diff"]
layers:
  description: The layers in image order, B(base first), as the manifest lists them.
  returned: always
  type: list
  elements: dict
  contains:
    diff_id:
      description: sha256 of the uncompressed layer tar; the layer's name in the store.
      type: str
    digest:
      description: The digest of the blob as stored (compressed, for gzip or zstd layers); null when the input does not name it.
      type: str
    media_type:
      description: The layer's media type, or C(rootfs-tar).
      type: str
    size:
      description: The stored blob size in bytes, when known.
      type: int
    path:
      description: The layer directory (an overlay lower directory).
      type: str
    status:
      description: V(present), V(partial) or V(absent) in the store after the run (before it, in check mode).
      type: str
  sample:
    - diff_id: "sha256:0a8e..."
      digest: "sha256:6016..."
      media_type: application/vnd.oci.image.layer.v1.tar+gzip
      size: 1083779
      path: /var/lib/kernelbox/layers/sha256/0a8e.../diff
      status: present
config:
  description: The parts of the image config a runtime needs, under their OCI names; empty values when not set.
  returned: always
  type: dict
  contains:
    Entrypoint:
      description: The entrypoint argv.
      type: list
      elements: str
    Cmd:
      description: The default arguments.
      type: list
      elements: str
    Env:
      description: Environment as C(NAME=value) strings.
      type: list
      elements: str
    WorkingDir:
      description: The working directory; empty for C(/).
      type: str
    User:
      description: The user, as C(uid), C(uid:gid), C(name) or C(name:group); empty for root.
      type: str
    StopSignal:
      description: The stop signal; empty for SIGTERM.
      type: str
    Labels:
      description: The image labels.
      type: dict
  sample: {"Entrypoint": [], "Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"], "WorkingDir": "", "User": "", "StopSignal": "", "Labels": {}}
process:
  description: The image's default process as a runtime runs it. C(args) is Entrypoint followed by Cmd, C(cwd) defaults to C(/) and C(user) to C(0).
  returned: always
  type: dict
  sample: {"args": ["/bin/sh", "-c", "echo hi"], "env": ["PATH=/usr/bin:/bin"], "cwd": "/", "user": "0"}
digest:
  description:
    - What O(name) resolved to in the registry (or in the store, when it was not asked), as a registry reports
      it (C(docker pull) prints it as C(Digest:)); for a multi-platform image, the index's digest. Pin the image
      with C(name@digest).
  returned: when O(name) is given
  type: str
  sample: "sha256:9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7"
image:
  description:
    - What was read. The format (V(registry) for O(name)), the source (a path, or the registry URL), the manifest
      and config digests, the reference and the platform.
    - For O(name) also C(digest) (as RV(digest)) and C(id), the image ID (its config digest).
  returned: always
  type: dict
  sample:
    format: oci-archive
    source: /srv/images/web.oci.tar
    manifest_digest: "sha256:75e0..."
    config_digest: "sha256:df04..."
    reference: localhost/web:latest
    platform: linux/amd64
store:
  description: The layer store.
  returned: always
  type: str
  sample: /var/lib/kernelbox/layers
actions:
  description: The steps taken (or, in check mode, that would be taken), each with its reason.
  returned: always
  type: list
  elements: str
  sample:
    - "unpack layer 1/2 sha256:0a8e... (tar+gzip, 1.0 MB) into /var/lib/kernelbox/layers/sha256/0a8e.../diff (not in the store)"
    - "download and unpack layer 2/2 sha256:1c65... (tar+gzip, 3.1 MB) from docker.io/library/busybox (not in the store)"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.image_layers import (
    ARGUMENT_SPEC, MODULE_KWARGS, resource_for)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_KWARGS)
    flow.run(module, resource_for(module.params, module.check_mode))


if __name__ == "__main__":
    main()
