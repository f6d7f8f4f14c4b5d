# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A "remote host" for the connection plugin: OpenSSH's sshd in network and mount namespaces of its own.

It listens on 127.0.0.1:22 of its own network namespace only (nothing outside can reach it), with a host key and an
authorized key this fixture generates (never the machine's own), and it has fresh /run and /var/lib (so the
kernelbox state and code copy it sees are its own, as a remote host's would be); /tmp, the checkout and the cgroup
filesystem are shared.  Clients reach it through ``ProxyCommand`` (nsenter into that network namespace, socat to
port 22): ``RemoteHost.inventory_vars()`` gives the Ansible variables for it.  ``stop()`` kills what is left in
its mount namespace, then sshd, by PID.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
import typing as t

SSHD = "/usr/sbin/sshd"
CONFIG = """\
Port 22
ListenAddress 127.0.0.1
HostKey {dir}/host_key
PidFile none
AuthorizedKeysFile {dir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
"""
SETUP = ("set -e; ip link set lo up; mount -t tmpfs -o mode=0755 tmpfs /run; mount -t tmpfs -o mode=0755 tmpfs "
         "/var/lib; mkdir -p /run/sshd; exec {sshd} -D -e -f {dir}/sshd_config")


class RemoteHost:
    alias = "kbt-remote"

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.process: t.Optional[subprocess.Popen] = None

    def start(self, timeout: float = 60.0) -> "RemoteHost":
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kbt-" + name,
                            "-f", os.path.join(self.dir, name)], check=True)
        with open(os.path.join(self.dir, "client_key.pub")) as handle:
            client = handle.read()
        with open(os.path.join(self.dir, "authorized_keys"), "w") as handle:
            handle.write(client)
        with open(os.path.join(self.dir, "host_key.pub")) as handle:
            host_key = handle.read().split()
        with open(os.path.join(self.dir, "known_hosts"), "w") as handle:
            handle.write("%s %s %s\n" % (self.alias, host_key[0], host_key[1]))
        with open(os.path.join(self.dir, "sshd_config"), "w") as handle:
            handle.write(CONFIG.format(dir=self.dir))
        self.log = open(os.path.join(self.dir, "sshd.log"), "w")
        self.process = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c",
             SETUP.format(sshd=SSHD, dir=shlex.quote(self.dir))], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sshd did not start listening: %s" % self.log_text())
            time.sleep(0.1)
        return self

    def _listening(self) -> bool:
        try:
            with open("/proc/%d/net/tcp" % self.process.pid) as handle:  # its own network namespace's sockets
                return any(line.split()[1] == "0100007F:0016" and line.split()[3] == "0A" for line in handle
                           if line.strip() and not line.lstrip().startswith("sl"))
        except OSError:
            return False

    def log_text(self) -> str:
        try:
            with open(os.path.join(self.dir, "sshd.log")) as handle:
                return handle.read()[-3000:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def path(self, inside: str) -> str:
        """A path of the remote host's own filesystem view (its /run and /var/lib), from here."""
        return "/proc/%d/root%s" % (self.pid, inside)

    def ssh_common_args(self) -> str:
        proxy = "nsenter --net=/proc/%d/ns/net socat STDIO TCP:127.0.0.1:22" % self.pid
        known_hosts = os.path.join(self.dir, "known_hosts")
        return ("-o ProxyCommand=%s -o HostKeyAlias=%s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes "
                "-o IdentitiesOnly=yes -o BatchMode=yes" % (shlex.quote(proxy), self.alias, known_hosts))

    def ssh_args(self) -> str:
        """Connection sharing, as Ansible's default, with the master's socket in our directory (stop() ends it)."""
        return "-o ControlMaster=auto -o ControlPersist=60s -o ControlPath=%s/cm-%%C" % self.dir

    def inventory_vars(self) -> t.Dict[str, t.Any]:
        """Ansible variables of a host reached over this SSH."""
        return {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_user": "root",
                "ansible_ssh_private_key_file": os.path.join(self.dir, "client_key"),
                "ansible_ssh_common_args": self.ssh_common_args(), "ansible_ssh_args": self.ssh_args(),
                "ansible_python_interpreter": "/usr/bin/python3"}

    def end_masters(self) -> None:
        """Ask every SSH connection master (ControlPersist) of ours to exit."""
        for entry in os.listdir(self.dir):
            if entry.startswith("cm-"):
                subprocess.run(["ssh", "-o", "ControlPath=" + os.path.join(self.dir, entry), "-O", "exit", self.alias],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)

    def leftovers(self) -> t.List[int]:
        """Processes in its mount namespace other than sshd itself (sessions, a supervisor started over SSH)."""
        try:
            ours = os.stat("/proc/%d/ns/mnt" % self.pid).st_ino
        except OSError:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.pid:
                try:
                    if os.stat("/proc/%s/ns/mnt" % entry).st_ino == ours:
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def stop(self, grace: float = 30.0) -> t.List[int]:
        """Wait (up to ``grace``) for what runs there to end, kill what is left and sshd; returns the PIDs killed."""
        if self.process is None:
            return []
        self.end_masters()
        deadline = time.monotonic() + grace
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        killed = self.leftovers()
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()
        self.process = None
        return killed
