#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: container_exec
short_description: Run a command inside a running container, like docker exec or nsenter -t PID -a
version_added: 0.1.0
description:
  - Runs O(command) inside the namespaces of a running kernelbox container (O(name)), or of any process (O(pid)), the
    way C(nsenter -t PID -a) does. Nothing new is created; the command joins the target's user, mount, PID, network,
    IPC, UTS, cgroup and time namespaces (all by default, or the subset in O(namespaces)) and, when it joins the
    mount namespace, the target's root directory.
  - With O(name), the command also runs with the container's capabilities, C(no_new_privs), seccomp profile,
    rlimits, umask, environment, working directory and user, all read from the container's stored spec, and never
    with more than the container's init has (each capability set is intersected with the init's bounding set). It
    runs in its own child group of the container's cgroup, so it is charged to the container and bound by its
    limits.
  - With O(pid), the command runs with the ids, capability sets and C(no_new_privs) of that process, as
    C(/proc/PID/status) shows them. A process under a seccomp filter is refused, because its filter cannot be
    copied; exec into a kernelbox container by O(name) instead.
  - The process that joins is made non-dumpable before it enters anything (the CVE-2019-5736 lesson), so nothing
    inside the container can open or ptrace C(/proc/PID/exe) of it, which is the host's Python interpreter, before
    it executes the command. That holds even for a container given CAP_SYS_PTRACE, as long as it has its own user
    namespace (the default); a container sharing the host's user namespace with CAP_SYS_PTRACE is privileged on
    the host and is not protected.
  - Returns like M(ansible.builtin.command) (RV(rc), RV(stdout), RV(stderr), RV(start), RV(end), RV(delta)), fails
    on a non-zero return code, and reports C(changed=true); use C(changed_when) and C(failed_when) as usual.
  - A stopped or missing container, or a process that does not exist, fails with a clear message.
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes
  - kernelbox.containers._requirements
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: partial
    details:
      - In check mode the target is found and checked, and the command is not run; the result says so in RV(msg).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: none
    details:
      - The command runs each time; whether that changes anything is up to the command (use C(changed_when)).
options:
  name:
    description:
      - The kernelbox container to run the command in (as named in M(kernelbox.containers.container_process)).
      - Exactly one of O(name) and O(pid) is required.
    type: str
  pid:
    description:
      - A host PID; the command runs in that process's namespaces, with its privileges.
      - Exactly one of O(name) and O(pid) is required.
    type: int
  command:
    description:
      - The command as an argv list; the first item is looked up in C(PATH) (inside the container when the mount
        namespace is joined). No shell is involved; use C([sh, -c, "..."]) for one.
    type: list
    elements: str
    required: true
  env:
    description:
      - Environment variables, added to (and overriding) the container's own environment from its spec.
      - With O(pid) the environment is C(PATH) (the usual default) plus these.
    type: dict
    default: {}
  cwd:
    description:
      - The working directory, resolved inside the container's root. It defaults to the container's working
        directory (C(/) with O(pid)). Paths that escape the root through C(..), symlinks or C(/proc) magic links are
        refused.
    type: str
  user:
    description:
      - The numeric C(UID) or C(UID:GID) to run as, as seen inside the container (the GID defaults to the UID).
        Names are not resolved, as in M(kernelbox.containers.container_process).
      - Defaults to the container's user (with O(pid), to the process's user).
      - A non-root user keeps no capabilities after exec, as the kernel decides for any non-root exec.
    type: str
  groups:
    description: Additional numeric group IDs; default the container's (with O(pid), the process's).
    type: list
    elements: int
  stdin:
    description: Text to send to the command's standard input. Without it, standard input is empty.
    type: str
  stdin_add_newline:
    description: Add a newline to O(stdin), as M(ansible.builtin.command) does.
    type: bool
    default: true
  strip_empty_ends:
    description: Strip trailing newlines from RV(stdout) and RV(stderr), as M(ansible.builtin.command) does.
    type: bool
    default: true
  timeout:
    description:
      - Seconds the command may run. At the deadline every process the command started is killed with SIGKILL
        (through its own child cgroup of the container, so nothing escapes and nothing else is touched), and the
        task fails. The container keeps running.
      - With O(pid), where there is no container cgroup to use, the command's process tree is killed, deepest first.
      - By default there is no timeout.
    type: float
  output_limit:
    description:
      - How much of the command's standard output, and of its standard error, the result keeps, as a size such as
        V(1M) or V(64K), or bytes. The command's output is always read to the end (it never blocks), but only the
        first O(output_limit) bytes of each stream are kept; RV(stdout_dropped) and RV(stderr_dropped) count the
        rest, and a warning says so.
      - V(0) keeps everything, as M(ansible.builtin.command) does. Each megabyte returned costs several on the
        controller (RV(stdout) and RV(stdout_lines) carry it twice), so keep a bound for commands whose output a
        container controls.
    type: str
    default: 1M
  namespaces:
    description:
      - Which of the target's namespaces to join. All by default. V(mnt) also switches to the target's root directory;
        without it the command sees the host's filesystem (for example O(namespaces=[net]) to run host tools against
        the container's network).
      - The user namespace is joined whenever the target has its own, listed or not, because the container's
        privileges live there; a subset never runs with the host's root privileges.
      - Namespaces the target shares with the module (the host's) are not entered.
    type: list
    elements: str
    choices: [user, mnt, pid, net, ipc, uts, cgroup, time]
    default: [user, cgroup, ipc, uts, net, pid, time, mnt]
notes:
  - Requires root on the target.
  - The command ends when its process exits and its standard output and error are closed, as with
    M(ansible.builtin.command). Processes it leaves running in the background (with their output redirected) move
    into the container's cgroup and keep running, as with C(docker exec); RV(left_running) counts them.
  - A background process that keeps standard output open keeps the task waiting, until O(timeout).
  - If the module itself is killed, the command is killed with it; the child cgroup it leaves is removed by the
    next exec into the same container.
seealso:
  - module: kernelbox.containers.container_process
  - module: kernelbox.containers.container_info
  - module: ansible.builtin.command
"""

EXAMPLES = r"""
- name: Read the container's hostname
  kernelbox.containers.container_exec:
    name: web
    command: [cat, /etc/hostname]
  register: hostname
  changed_when: false

- name: Run a script with input, as an unprivileged user, with a deadline
  kernelbox.containers.container_exec:
    name: web
    command: [sh, -c, "read -r line; echo got $line"]
    stdin: hello
    user: "1000:1000"
    timeout: 30

- name: Use the host's tools on the container's network only
  kernelbox.containers.container_exec:
    name: web
    namespaces: [net]
    command: [ip, -brief, address]
  changed_when: false

- name: Dump a large file, keeping at most 16 MiB of it in the result (stdout_dropped counts the rest)
  kernelbox.containers.container_exec:
    name: web
    command: [cat, /var/log/app.log]
    output_limit: 16M
  register: app_log
  changed_when: false

- name: Join any process by PID (nsenter -t PID -a)
  kernelbox.containers.container_exec:
    pid: 4242
    command: [ps, -ef]
  changed_when: false
"""

RETURN = r"""
rc:
  description: The command's exit code, or -N when it was killed by signal N (-9 after a timeout).
  returned: when the command ran
  type: int
  sample: 0
stdout:
  description: Standard output, decoded as UTF-8 (invalid bytes replaced).
  returned: when the command ran
  type: str
  sample: web
stderr:
  description: Standard error, decoded as UTF-8.
  returned: when the command ran
  type: str
  sample: ""
stdout_lines:
  description: RV(stdout) split into lines.
  returned: when the command ran
  type: list
  elements: str
  sample: [web]
stderr_lines:
  description: RV(stderr) split into lines.
  returned: when the command ran
  type: list
  elements: str
  sample: []
start:
  description: When the command started, local time, as M(ansible.builtin.command) prints it.
  returned: when the command ran
  type: str
  sample: "2026-05-07 12:00:00.123456"
end:
  description: When it ended.
  returned: when the command ran
  type: str
  sample: "2026-05-07 12:00:00.135790"
delta:
  description: How long it ran.
  returned: when the command ran
  type: str
  sample: "0:00:00.012334"
cmd:
  description: The command as given.
  returned: always
  type: list
  elements: str
  sample: [cat, /etc/hostname]
name:
  description: The container's name.
  returned: with O(name)
  type: str
  sample: web
pid:
  description: The host PID of the process whose namespaces were joined (the container's init).
  returned: always
  type: int
  sample: 4242
timed_out:
  description: Whether O(timeout) ended the command.
  returned: when the command ran
  type: bool
  sample: false
namespaces_joined:
  description: The namespaces actually entered (those the target shares with the host are not).
  returned: when the command ran
  type: list
  elements: str
  sample: [user, cgroup, ipc, uts, net, pid, mnt]
left_running:
  description: Processes the command left running in the background, moved into the container's cgroup.
  returned: when the command ran
  type: int
  sample: 0
stdout_dropped:
  description: Bytes of standard output read past O(output_limit) and not kept; RV(stdout) holds only the first
    O(output_limit) bytes when this is not 0.
  returned: when the command ran
  type: int
  sample: 0
stderr_dropped:
  description: Bytes of standard error read past O(output_limit) and not kept.
  returned: when the command ran
  type: int
  sample: 0
msg:
  description: Why the task failed (C(non-zero return code), a timeout, a container that is not running), or that
    check mode did not run the command.
  returned: on failure and in check mode
  type: str
  sample: "non-zero return code"
actions:
  description: The step taken (or, in check mode, that would be taken).
  returned: always
  type: list
  elements: str
  sample: ["run ['cat', '/etc/hostname'] in web"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container_exec import (
    ARGUMENT_SPEC, MODULE_KWARGS, ContainerExecResource)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_KWARGS)
    flow.run(module, ContainerExecResource(module.params, module.check_mode))


if __name__ == "__main__":
    main()
