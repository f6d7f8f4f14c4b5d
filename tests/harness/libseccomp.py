# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The same profile compiled by libseccomp (Debian's libseccomp2), as runc would: a test oracle and a bench rival.

The collection never uses libseccomp; tests and benchmarks do, to compare our
compiler's decisions and cost with the reference implementation.  Names are
resolved by libseccomp's own table, so a wrong number in ours shows up too.
"""

import ctypes
import os

SCMP_FLTATR_CTL_OPTIMIZE = 8
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
        "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_ACTIONS = {"SCMP_ACT_KILL": 0, "SCMP_ACT_KILL_THREAD": 0, "SCMP_ACT_KILL_PROCESS": 0x80000000,
            "SCMP_ACT_TRAP": 0x00030000, "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000,
            "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000}


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def load():
    """libseccomp.so.2 via ctypes; a missing library fails the caller loudly."""
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    return lib


def _ret(action, errno_ret):
    base = _ACTIONS[action]
    if action in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        return base | (1 if errno_ret is None else errno_ret)
    return base


def compile_oci(lib, oci, binary_tree=False):
    """struct sock_filter[] bytes from libseccomp for an OCI linux.seccomp dict (native arch only)."""
    default = _ret(oci["defaultAction"], oci.get("defaultErrnoRet"))
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        if binary_tree:
            lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2)
        for rule in oci.get("syscalls", []):
            action = _ret(rule["action"], rule.get("errnoRet"))
            if action == default:
                continue                                   # runc skips these; libseccomp refuses them
            args = rule.get("args") or []
            array = (_ArgCmp * max(1, len(args)))(*[
                _ArgCmp(arg["index"], _OPS[arg["op"]], arg["value"], arg.get("valueTwo", 0)) for arg in args])
            for name in rule["names"]:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr < 0:
                    continue                               # not on this arch (pseudo numbers are negative)
                rc = lib.seccomp_rule_add_array(ctx, action, nr, len(args), array)
                if rc != 0:
                    raise OSError(-rc, "seccomp_rule_add_array(%s) failed" % name)
        fd = os.memfd_create("kbt-libseccomp")
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc != 0:
                raise OSError(-rc, "seccomp_export_bpf failed")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def resolve(lib, name):
    return lib.seccomp_syscall_resolve_name(name.encode())
