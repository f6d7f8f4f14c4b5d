# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Seccomp filters on the real kernel, installed in forked children.

Each probe makes the real syscall and reports what the kernel answered.
Syscalls are made through glibc's wrappers where glibc has one, otherwise by
number read from the system's uapi header (never from the table under test),
and each blocked call is first made without a filter to show that the kernel
itself would not have refused it the same way.
"""

import ctypes
import errno
import json
import mmap
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import profile as seccomp
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import bpf as seccomp_bpf
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc as kb_libc

UNISTD_64 = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
CLONE_NEWNS, CLONE_NEWUSER, SIGCHLD = 0x00020000, 0x10000000, 17
MS_REC, MS_PRIVATE = 16384, 1 << 18

LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
LIBC.syscall.restype = ctypes.c_long


def _header_numbers():
    if os.uname().machine != "x86_64":
        pytest.fail("these probes drive x86_64 syscalls; run them on x86_64")
    if not os.path.exists(UNISTD_64):
        pytest.fail("%s is missing: install linux-libc-dev (the independent source of syscall numbers)" % UNISTD_64)
    with open(UNISTD_64) as handle:
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"#define __NR_(\w+) (\d+)", handle.read())}


NR = _header_numbers()


def raw(name, *args):
    """syscall(2) by the header's number: (return value, errno)."""
    ctypes.set_errno(0)
    ret = LIBC.syscall(ctypes.c_long(NR[name]), *[ctypes.c_long(a) for a in args])
    return ret, ctypes.get_errno() if ret == -1 else 0


def call(func, *args):
    ctypes.set_errno(0)
    ret = func(*args)
    return ret, ctypes.get_errno() if ret == -1 else 0


def in_child(probe, program=None, no_new_privs=True, prepare=None):
    """Fork; optionally install ``program``; return (wait status, probe() result or error text)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            if prepare:
                prepare()
            if no_new_privs:
                kb_libc.set_no_new_privs()
            if program is not None:
                seccomp.install(program)
            payload = {"ok": probe()}
        except BaseException as exc:  # the child must never return into pytest
            payload = {"error": "%s: %s" % (type(exc).__name__, exc)}
        try:
            os.write(write_end, json.dumps(payload).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    _pid, status = os.waitpid(pid, 0)
    return status, (json.loads(data.decode()) if data else None)


def ok(status, payload):
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "child died: status %#x" % status
    assert payload and "ok" in payload, payload
    return payload["ok"]


@pytest.fixture
def scratch_dir():
    path = tempfile.mkdtemp(prefix="kbt-seccomp-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def status_fields():
    with open("/proc/self/status") as handle:
        fields = dict(line.split(":", 1) for line in handle.read().splitlines() if ":" in line)
    return {key: fields[key].strip() for key in ("Seccomp", "Seccomp_filters", "NoNewPrivs") if key in fields}


def dangerous_probes(target):
    """The calls Docker's profile refuses, made for real: name -> (ret, errno)."""
    results = {}
    results["mount"] = call(LIBC.mount, b"kbt", target.encode(), b"tmpfs", ctypes.c_ulong(0), None)
    results["umount2"] = call(LIBC.umount2, target.encode(), 0)
    results["unshare"] = call(LIBC.unshare, CLONE_NEWNS)
    netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    results["setns"] = call(LIBC.setns, netns, 0)
    os.close(netns)
    results["keyctl"] = raw("keyctl", 0, -3 & 0xFFFFFFFF, 0)          # KEYCTL_GET_KEYRING_ID, session keyring
    results["bpf"] = raw("bpf", 0, 0, 0)                              # BPF_MAP_CREATE with a NULL attr
    results["io_uring_setup"] = raw("io_uring_setup", 1, 0)           # NULL params
    results["clone3"] = raw("clone3", 0, 0)                           # NULL args: EFAULT/EINVAL if it ran
    ret, err = raw("clone", CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
    if ret == 0:      # the raw clone ran: this is the new child, which must leave at once
        os._exit(0)
    if ret > 0:
        os.waitpid(ret, 0)
    results["clone(CLONE_NEWUSER)"] = (ret, err)
    return results


def test_default_filter_blocks_what_docker_blocks(scratch_dir):
    baseline = ok(*in_child(lambda: dangerous_probes(scratch_dir), prepare=lambda: LIBC.unshare(CLONE_NEWNS)))
    filtered = ok(*in_child(lambda: dict(dangerous_probes(scratch_dir), status=status_fields()),
                            program=seccomp.default_program([])))
    assert filtered.pop("status") == {"Seccomp": "2", "Seccomp_filters": "1", "NoNewPrivs": "1"}
    expected = {name: [-1, errno.EPERM] for name in baseline}
    expected["clone3"] = [-1, errno.ENOSYS]
    assert filtered == expected
    for name, (_ret, err) in baseline.items():       # the kernel alone answers differently: the filter decided
        assert err != expected[name][1], "%s: the kernel itself returned %s without a filter" % (name, err)


def test_ordinary_work_still_runs_under_the_default_filter(scratch_dir):
    def work():
        out = {}
        pid = os.fork()                                   # clone without namespace flags
        if pid == 0:
            os._exit(7)
        out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        out["true"] = subprocess.run(["/bin/true"], check=False).returncode      # posix_spawn: clone3 ENOSYS -> clone
        seen = []
        thread = threading.Thread(target=lambda: seen.append(threading.get_native_id()))
        thread.start()
        thread.join()
        out["thread"] = len(seen)
        path = os.path.join(scratch_dir, "data")
        with open(path, "w") as handle:
            handle.write("kernelbox")
        with open(path) as handle:
            out["file"] = handle.read()
        os.unlink(path)
        left, right = socket.socketpair()
        left.sendall(b"ping")
        out["unix"] = right.recv(4).decode()
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname())
        conn, _addr = server.accept()
        client.sendall(b"pong")
        out["tcp"] = conn.recv(4).decode()
        for sock in (left, right, server, client, conn):
            sock.close()
        vsock = raw("socket", 40, socket.SOCK_STREAM, 0)
        out["vsock"] = list(vsock)
        out["vsock_high_bits"] = list(raw("socket", 0x100000028, socket.SOCK_STREAM, 0))
        return out

    got = ok(*in_child(work, program=seccomp.default_program(["CAP_CHOWN", "CAP_SETUID"])))
    assert got == {"fork": 7, "true": 0, "thread": 1, "file": "kernelbox", "unix": "ping", "tcp": "pong",
                   "vsock": [-1, errno.EPERM], "vsock_high_bits": [-1, errno.EPERM]}


def test_cap_sys_admin_lets_mount_through_the_filter(scratch_dir):
    def admin_work():
        out = {"unshare": call(LIBC.unshare, CLONE_NEWNS)}
        out["private"] = call(LIBC.mount, None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None)
        out["mount"] = call(LIBC.mount, b"kbt", scratch_dir.encode(), b"tmpfs", ctypes.c_ulong(0), None)
        with open("/proc/self/mountinfo") as handle:
            out["fstype"] = [line.split(" - ")[1].split()[0] for line in handle
                             if line.split()[4] == scratch_dir]
        out["clone3"] = list(raw("clone3", 0, 0))
        return out

    got = ok(*in_child(admin_work, program=seccomp.default_program(["CAP_SYS_ADMIN"])))
    assert got["unshare"] == [0, 0] and got["private"] == [0, 0] and got["mount"] == [0, 0]
    assert got["fstype"] == ["tmpfs"]
    assert got["clone3"][0] == -1 and got["clone3"][1] not in (errno.ENOSYS, errno.EPERM)   # the kernel's answer
    assert not any(line.split()[4] == scratch_dir for line in open("/proc/self/mountinfo"))  # stayed in the child


OCI_BLOCK_GETPID = {"ociVersion": "1.0.2", "linux": {"seccomp": {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]}}}


def test_oci_profile_blocks_getpid_with_errno_42():
    program = seccomp.compile_profile(seccomp.from_oci(OCI_BLOCK_GETPID["linux"]["seccomp"]))
    got = ok(*in_child(lambda: {"getpid": list(raw("getpid")), "getppid": raw("getppid")[0]}, program=program))
    assert got["getpid"] == [-1, 42]
    assert got["getppid"] == os.getpid()


def _machine_code(code):
    """A callable running ``code`` (x86_64 machine code ending in ret); the mapping stays alive with it."""
    region = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    region.write(code)
    func = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(region)))
    return func, region


I386_GETPID = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"      # mov eax, 20 (i386 getpid); int 0x80; ret
X32_GETPID = b"\xb8\x27\x00\x00\x40\x0f\x05\xc3"       # mov eax, 0x40000000 | 39 (x32 getpid); syscall; ret


@pytest.mark.parametrize("code,abi", [(I386_GETPID, "i386"), (X32_GETPID, "x32")])
def test_other_abis_cannot_bypass_a_deny_rule(code, abi):
    func, region = _machine_code(code)
    try:
        # Without a filter: i386 getpid via int 0x80 works on this kernel (a real route around rules
        # written for x86_64 numbers); x32 works where the kernel has it, else ENOSYS.
        returned, pid = ok(*in_child(lambda: [func(), os.getpid()]))
        assert returned == pid if abi == "i386" else returned in (pid, -errno.ENOSYS), (abi, returned, pid)
        program = seccomp.compile_profile(seccomp.from_oci(OCI_BLOCK_GETPID["linux"]["seccomp"]))
        status, payload = in_child(func, program=program)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS, (abi, status, payload)
        assert payload is None
    finally:
        region.close()


def test_long_program_with_chained_jumps_runs_in_the_kernel():
    keep = set(["read", "write", "close", "exit", "exit_group", "mmap", "munmap", "brk", "madvise", "mprotect",
                "mremap", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "futex", "getpid", "fstat",
                "newfstatat", "lseek", "ioctl", "openat", "getrandom", "sigaltstack"])
    table = seccomp._ARCHES["x86_64"].table
    names = sorted((name for name in table if name not in keep), key=table.get)
    rules = [{"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 100 + i} for i, name in enumerate(names)]
    rules += [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1000 + value,
               "args": [{"index": 0, "value": value << 32 | value, "op": "SCMP_CMP_EQ"}]} for value in range(40)]
    program = seccomp.compile_profile(seccomp.from_oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}))
    insns = seccomp_bpf.instructions(program)
    assert len(insns) > 800 and any(code == seccomp_bpf.BPF_JMP_JA for code, _jt, _jf, _k in insns)

    def probe():
        return {name: raw(name)[1] for name in ("getppid", "uname", "sysinfo", "times", "getcwd", "pause")} | {
            "getpid(7)": raw("getpid", 7 << 32 | 7)[1], "getpid(39)": raw("getpid", 39 << 32 | 39)[1],
            "getpid(40)": raw("getpid", 40 << 32 | 40)[1]}

    got = ok(*in_child(probe, program=program))
    expected = {name: 100 + names.index(name) for name in ("getppid", "uname", "sysinfo", "times", "getcwd", "pause")}
    expected.update({"getpid(7)": 1007, "getpid(39)": 1039, "getpid(40)": 0})
    assert got == expected


def test_install_without_no_new_privs_or_cap_sys_admin_is_refused_with_context():
    def drop_sys_admin():
        effective, permitted, inheritable = kb_libc.capget()
        kb_libc.capset(effective & ~(1 << 21), permitted, inheritable)

    status, payload = in_child(str, program=seccomp.default_program([]), no_new_privs=False,
                               prepare=drop_sys_admin)
    assert os.WIFEXITED(status)
    assert "[Errno %d]" % errno.EACCES in payload["error"] and "Permission denied" in payload["error"]
    assert "no_new_privs" in payload["error"] and "seccomp(SECCOMP_SET_MODE_FILTER" in payload["error"]
    # As root with CAP_SYS_ADMIN and without no_new_privs, the kernel accepts the filter.
    status, payload = in_child(status_fields, program=seccomp.default_program([]), no_new_privs=False)
    assert ok(status, payload) == {"Seccomp": "2", "Seccomp_filters": "1", "NoNewPrivs": "0"}
