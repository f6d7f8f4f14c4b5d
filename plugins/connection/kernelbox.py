# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: kernelbox
short_description: Run tasks inside a kernelbox container, on the controller or on a remote host
version_added: 0.1.0
description:
  - Every task of a host with C(ansible_connection=kernelbox.containers.kernelbox) runs inside a running kernelbox
    container (started by M(kernelbox.containers.container_process)), like C(community.docker.docker) or
    C(containers.podman.podman) do for their containers.
  - Commands take the path M(kernelbox.containers.container_exec) takes. The joining process is made non-dumpable
    before it enters anything, joins the container's namespaces, cgroup and root, and runs with the container's
    user, capabilities, seccomp filter and C(no_new_privs), never more.
  - Files are copied into and out of the container by a process joined the same way, which resolves the path inside
    the container's root (C(openat2) with C(RESOLVE_IN_ROOT) and C(RESOLVE_NO_MAGICLINKS), from inside the
    container's mount namespace) and writes or reads it as the container's user. A symlink the container planted
    cannot make the host write or read anything outside the container, and only regular files are copied.
  - The work on the container's host is done by a small helper, C(kernelbox-connection.py), that runs as root there.
    It lives in the runtime code copy under C(/var/lib/kernelbox/runtime/<digest>/), the one the supervisor runs
    from; the plugin installs it on first use when it is missing (the copy is named after its content, so a
    collection upgrade installs a new one beside the old).
  - When O(kernelbox_host) is C(localhost) (the default), the helper runs on the controller, which must then be
    root. Otherwise the plugin reaches that host with C(ansible.builtin.ssh) as O(kernelbox_host_user), which must
    be root, and runs the helper there.
  - Pipelining is supported and recommended (one helper run per module instead of several).
  - Modules need Python inside the container; M(ansible.builtin.raw) needs only C(/bin/sh) (O(executable) there).
author:
  - kernelbox.containers contributors (@kernelbox)
notes:
  - C(become) works inside the container where the container has C(su), C(sudo) or another become method, and needs
    no password (for example C(su) from root, or C(sudo) with C(NOPASSWD)). A become password is refused, because
    commands run without a terminal. Containers run with C(no_new_privs) by default, so set-uid programs cannot
    raise privileges; become works from root to another user, not from a user to root.
  - Each stream of a command's output is kept up to O(kernelbox_output_limit) bytes; the rest is dropped and the task
    fails, saying how much was dropped. This bounds the memory a container's output can cost the host and the
    controller.
  - See docs/connection.md in the collection for the set-up over SSH, inventories and the threat model.
extends_documentation_fragment:
  - connection_pipelining
options:
  remote_addr:
    description:
      - The container's name.
      - O(kernelbox_container) takes precedence, so C(ansible_host) can keep another meaning.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
  kernelbox_container:
    description:
      - The container's name, when it is not the host's C(ansible_host) or inventory name.
    type: str
    vars:
      - name: kernelbox_container
  remote_user:
    description:
      - The user to run as inside the container, C(UID) or C(UID:GID) (numbers, as inside the container).
      - By default the container's own process user (from its spec).
    type: str
    vars:
      - name: ansible_user
      - name: kernelbox_user
    keyword:
      - name: remote_user
  executable:
    description:
      - The shell that runs commands inside the container.
    type: str
    default: /bin/sh
    vars:
      - name: ansible_shell_executable
  kernelbox_host:
    description:
      - The host the container runs on.
      - V(localhost) (or empty) runs the helper on the controller, as the user running Ansible, which must be root.
      - Anything else, even V(127.0.0.1), is an address that C(ansible.builtin.ssh) connects to.
    type: str
    default: localhost
    vars:
      - name: kernelbox_host
  kernelbox_host_user:
    description:
      - The SSH user on O(kernelbox_host); the helper needs root.
    type: str
    default: root
    vars:
      - name: kernelbox_host_user
  kernelbox_host_port:
    description:
      - The SSH port of O(kernelbox_host).
    type: int
    vars:
      - name: kernelbox_host_port
  kernelbox_host_ssh_options:
    description:
      - Options for the C(ansible.builtin.ssh) connection to O(kernelbox_host), by that plugin's option names,
        for example C(private_key_file), C(ssh_common_args), C(ssh_args), C(host_key_checking), C(timeout).
    type: dict
    default: {}
    vars:
      - name: kernelbox_host_ssh_options
  kernelbox_host_python:
    description:
      - The Python 3 (3.9 or later) on the container's host that runs the helper.
    type: str
    default: /usr/bin/python3
    vars:
      - name: kernelbox_host_python
  kernelbox_output_limit:
    description:
      - Bytes of each output stream (stdout, stderr) of one command kept. Above it, the rest is dropped (counted, not
        stored) and the task fails saying so.
      - Module results are JSON on stdout; a few MiB is large for one. 64 MiB leaves room for big results (a
        slurped file, package facts) while keeping what a hostile container can make the host and the controller
        hold bounded.
    type: int
    default: 67108864
    vars:
      - name: kernelbox_output_limit
  kernelbox_fetch_limit:
    description:
      - The largest file C(fetch_file) (M(ansible.builtin.fetch) and friends) copies out of a container, in bytes.
        The file is read at most this far, even when the container keeps appending to it.
    type: int
    default: 1073741824
    vars:
      - name: kernelbox_fetch_limit
  kernelbox_inline_limit:
    description:
      - With a remote O(kernelbox_host), files up to this size travel inside the helper's request or reply (one SSH
        command); larger ones are staged in a root-only directory on the host and moved with SFTP or SCP.
    type: int
    default: 8388608
    vars:
      - name: kernelbox_inline_limit
  kernelbox_timeout:
    description:
      - Seconds after which a command inside the container is killed (all its processes, through its cgroup); the
        container keeps running. No limit by default, like other connection plugins; Ansible's C(timeout) task
        keyword also ends it.
    type: float
    vars:
      - name: kernelbox_timeout
"""

EXAMPLES = r"""
# In an inventory: a container on the controller (its name is the inventory name), and one on another host.
#   all:
#     hosts:
#       web:
#         ansible_connection: kernelbox.containers.kernelbox
#       db-container:
#         ansible_connection: kernelbox.containers.kernelbox
#         kernelbox_container: db
#         kernelbox_host: 192.0.2.10          # reached with ansible.builtin.ssh, as root
#         kernelbox_host_ssh_options:
#           private_key_file: ~/.ssh/containers_ed25519
#     vars:
#       ansible_pipelining: true

# Containers a play started, added as hosts (docs/connection.md has the whole pattern, from container_info).
- name: Start a container, then add it to the inventory
  hosts: container_hosts
  tasks:
    - name: The container
      kernelbox.containers.container_process:
        name: app
        rootfs: /srv/rootfs/debian-python
        command: [/bin/sleep, infinity]

    - name: Add it as a host
      ansible.builtin.add_host:
        name: "{{ inventory_hostname }}-app"
        groups: containers
        ansible_connection: kernelbox.containers.kernelbox
        kernelbox_container: app
        kernelbox_host: "{{ ansible_host | default(inventory_hostname) }}"

- name: Inside the containers
  hosts: containers
  gather_facts: false
  tasks:
    - name: A page
      ansible.builtin.copy:
        content: "<h1>hello</h1>\n"
        dest: /srv/www/index.html
        mode: "0644"

    - name: Without Python in the image
      ansible.builtin.raw: cat /etc/os-release
      changed_when: false

    - name: As another user (su or passwordless sudo inside the container)
      ansible.builtin.command: id -u
      become: true
      become_user: nobody
      become_method: ansible.builtin.su
      changed_when: false
"""

import typing as t

import ansible.constants as C
from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.connection import ConnectionBase
from ansible.plugins.loader import connection_loader
from ansible.utils.display import Display

from ansible_collections.kernelbox.containers.plugins.plugin_utils import _kernelbox_session as session_lib

display = Display()

LOCAL_NAMES = ("", "localhost")  # an address, even 127.0.0.1, is reached with SSH (it may be forwarded anywhere)
PYTHON_MISSING_HINT = (b"\nkernelbox: the container %s has no Python at the interpreter Ansible tried; modules need "
                       b"Python inside the container. For an image without Python, use ansible.builtin.raw (and "
                       b"gather_facts: false), or set ansible_python_interpreter.\n")


class Connection(ConnectionBase):
    """Tasks inside a kernelbox container."""

    transport = "kernelbox.containers.kernelbox"
    has_pipelining = True
    has_tty = False  # become plugins that need a terminal are refused by Ansible up front

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._session: t.Optional[session_lib.Session] = None

    @property
    def container(self) -> str:
        return self.get_option("kernelbox_container") or self.get_option("remote_addr")

    def _connect(self) -> "Connection":
        if self._session is None:
            host = (self.get_option("kernelbox_host") or "").strip()
            hop = session_lib.LocalHop() if host in LOCAL_NAMES else self._ssh_hop(host)
            self._session = session_lib.Session(hop, self.container, self.get_option("kernelbox_host_python"),
                                                session_lib.code_digest(self._cache_dir()))
            display.vvv("KERNELBOX: container %s on %s" % (self.container, hop.name), host=self.container)
        self._connected = True
        return self

    @staticmethod
    def _cache_dir() -> t.Optional[str]:
        local_tmp = getattr(C, "DEFAULT_LOCAL_TMP", None)
        return None if not local_tmp else to_text(local_tmp).rstrip("/").rpartition("/")[0] or None

    def _ssh_hop(self, host: str) -> session_lib.SshHop:
        ssh = connection_loader.get("ansible.builtin.ssh", self._play_context)
        if ssh is None:
            raise AnsibleError("kernelbox: the ansible.builtin.ssh connection plugin is not available")
        direct = dict(self.get_option("kernelbox_host_ssh_options") or {})
        direct.update(host=host, remote_user=self.get_option("kernelbox_host_user"))
        if self.get_option("kernelbox_host_port"):
            direct["port"] = self.get_option("kernelbox_host_port")
        try:
            ssh.set_options(direct=direct)
        except AnsibleError as exc:
            raise AnsibleError("kernelbox: kernelbox_host_ssh_options: %s" % exc)
        return session_lib.SshHop(ssh, host)

    def _user(self) -> t.Optional[str]:
        user = self.get_option("remote_user")
        return None if user in (None, "") else str(user)

    def exec_command(self, cmd: str, in_data: t.Optional[bytes] = None, sudoable: bool = False
                     ) -> t.Tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        if sudoable and self.become is not None and self.become.expect_prompt():
            raise AnsibleError("kernelbox: become with a password (%s) is not supported: commands run without a "
                               "terminal. Allow it without a password inside the container (sudo NOPASSWD, or su "
                               "from root), or connect as the user you need (ansible_user: UID)." % self.become.name)
        command = to_text(cmd, errors="surrogate_or_strict")
        argv = [self.get_option("executable") or "/bin/sh", "-c", command]
        display.vvv("EXEC %s" % argv, host=self.container)
        session = self._ensure()
        reply = session.exec(argv, in_data, self._user(), self.get_option("kernelbox_timeout"),
                             self.get_option("kernelbox_output_limit"))
        stdout, stderr = reply.stdout, reply.stderr
        if reply.dropped:
            note = ("\nkernelbox: output over kernelbox_output_limit (%d bytes per stream) was dropped: %s\n"
                    % (self.get_option("kernelbox_output_limit"),
                       ", ".join("%s %d bytes" % item for item in sorted(reply.dropped.items()))))
            stderr += note.encode()
            if reply.rc == 0:  # a truncated result must not pass for a whole one
                return 1, stdout, stderr
        if reply.rc == 127 and "python" in command and b"not found" in stderr:
            stderr += PYTHON_MISSING_HINT % self.container.encode()
        return t.cast(int, reply.rc), stdout, stderr

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self.container)
        self._ensure().put(in_path, out_path, self._user(), self.get_option("kernelbox_inline_limit"))

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self.container)
        self._ensure().fetch(in_path, out_path, self._user(), self.get_option("kernelbox_fetch_limit"),
                             self.get_option("kernelbox_inline_limit"))

    def _ensure(self) -> session_lib.Session:
        if self._session is None:
            self._connect()
        if self._session is None:  # pragma: no cover
            raise AnsibleConnectionFailure("kernelbox: not connected")
        return self._session

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self._connected = False
