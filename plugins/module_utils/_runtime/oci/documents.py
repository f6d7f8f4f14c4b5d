# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the documents kernelbox-runtime prints or writes.

``features()`` is the runtime-spec features document (features.md,
features-linux.md): what this code recognises, fixed by the code and not by
the host, as the spec asks, except ``seccomp.supportedFlags``, which runc also
reads from the kernel.  ``example_spec()`` is what ``spec`` writes: the
collection's secure defaults (user namespace, Docker's capabilities and seccomp
profile, masked paths), with runc's interactive ``sh`` on a terminal.
"""

from __future__ import annotations

import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import capabilities
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import mountopts
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as specs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model.spec_checks import NAMESPACE_TYPES
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import cli
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import bpf as seccomp_bpf
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import profile as seccomp


def _supported_flags() -> t.List[str]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
    supported = []
    for name, value in sorted(seccomp.FLAGS.items()):
        if not value:
            continue
        try:  # SECCOMP_SET_MODE_FILTER with a NULL program: EFAULT means the flag is known, EINVAL that it is not
            libc.syscall("seccomp", 1, value, None)
        except OSError as exc:
            if exc.errno == 14:
                supported.append(name)
    return supported


def features() -> t.Dict[str, t.Any]:
    options = sorted(set(mountopts._FLAGS) | set(mountopts.PROPAGATION) | {"bind", "rbind"})  # pylint: disable=protected-access
    return {
        "ociVersionMin": specs.OCI_VERSION_MIN,
        "ociVersionMax": specs.OCI_VERSION_MAX,
        "hooks": list(specs.HOOK_NAMES),
        "mountOptions": options,
        "linux": {
            "namespaces": list(NAMESPACE_TYPES),
            "capabilities": sorted(capabilities.CAP_NUMBERS, key=capabilities.CAP_NUMBERS.get),
            "cgroup": {"v1": False, "v2": True, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": sorted(seccomp.ACTIONS),
                "operators": sorted(seccomp_bpf.OPS),
                "archs": sorted(seccomp.ARCHITECTURES),
                "knownFlags": sorted(seccomp.FLAGS),
                "supportedFlags": _supported_flags(),
            },
            "apparmor": {"enabled": True},
            "selinux": {"enabled": True},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {
            "io.kernelbox.runtime.version": cli.VERSION,
            "io.kernelbox.etc.files": ", ".join(sorted(specs.ETC_FILE_ANNOTATIONS)),
        },
    }


def example_spec() -> t.Dict[str, t.Any]:
    spec = specs.default_spec("/rootfs", ["sh"], hostname="kernelbox")
    spec.process.terminal = True
    spec.process.env.append("TERM=xterm")
    config = spec.to_oci()
    config["root"] = {"path": "rootfs", "readonly": False}
    config["ociVersion"] = specs.OCI_VERSION
    return config
