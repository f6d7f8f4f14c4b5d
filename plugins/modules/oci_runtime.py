#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: oci_runtime
short_description: Install the kernelbox-runtime OCI runtime command on a host
version_added: 0.1.0
description:
  - Installs C(kernelbox-runtime), an OCI runtime command line (C(create), C(start), C(state), C(kill), C(delete),
    C(run), C(exec), C(ps), C(features), C(spec), C(pause), C(resume), C(update)) that runs containers through the same
    launcher and spec code as M(kernelbox.containers.container_process), so podman (C(--runtime)), containerd's runc
    shim and conformance tools can drive it.
  - The code is the collection's runtime code copy under C(/var/lib/kernelbox/runtime/) (shared with the supervisor,
    and left in place by O(state=absent)); the command is a small shell wrapper at O(path) that runs it with the
    host's O(python), isolated from the environment (C(-I -S)).
  - See the collection's C(docs/oci-runtime.md) for the command line, what a C(config.json) may hold, and which podman
    features work.
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes
options:
  path:
    description: Where the command goes; a directory on C(PATH) makes it callable as C(kernelbox-runtime).
    type: path
    default: /usr/local/bin/kernelbox-runtime
  python:
    description: The host's Python 3 (3.9 or later) that runs the command; no other package is needed.
    type: path
    default: /usr/bin/python3
  state:
    description: V(present) installs the command (and the code copy when this version's is not current); V(absent)
      removes the command.
    type: str
    choices: [present, absent]
    default: present
notes:
  - Requires root on the target, and so does the command.
seealso:
  - module: kernelbox.containers.container_process
"""

EXAMPLES = r"""
- name: Install kernelbox-runtime
  kernelbox.containers.oci_runtime:

- name: Use it from podman
  ansible.builtin.command:
    cmd: >-
      podman --runtime /usr/local/bin/kernelbox-runtime --cgroup-manager=cgroupfs
      run --rm docker.io/library/busybox true

- name: Remove the command (the code copy stays for the supervisor)
  kernelbox.containers.oci_runtime:
    state: absent
"""

RETURN = r"""
path:
  description: The command's path.
  returned: always
  type: str
  sample: /usr/local/bin/kernelbox-runtime
installed:
  description: Whether the command is there after the run (before it, in check mode).
  returned: always
  type: bool
  sample: true
code:
  description: The code copy the command runs, when it is this collection version's and current; else null.
  returned: always
  type: str
  sample: /var/lib/kernelbox/runtime/761551b40e419a2c
entry:
  description: The entry script the wrapper runs.
  returned: always
  type: str
  sample: /var/lib/kernelbox/runtime/current/kernelbox-runtime.py
actions:
  description: The steps taken (or, in check mode, that would be taken), each with its reason.
  returned: always
  type: list
  elements: str
  sample: ["write /usr/local/bin/kernelbox-runtime (absent)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.oci_runtime import (
    ARGUMENT_SPEC, OciRuntimeResource)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    flow.run(module, OciRuntimeResource(module.params, module.check_mode))


if __name__ == "__main__":
    main()
