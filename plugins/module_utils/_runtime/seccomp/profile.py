# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: seccomp filters without libseccomp.

Public API::

    Profile                                   the OCI ``linux.seccomp`` object as dataclasses
    from_oci(dict) -> Profile                 config.json's linux.seccomp, validated (ValidationError)
    Profile.to_oci() -> dict                  back to config.json shape, one to one
    default_profile(caps, arch=None)          Docker's default policy for a capability set (seccomp_default.py)
    from_docker(dict, caps, arch=None)        a Docker/moby profile file (includes/excludes) -> Profile
    compile_profile(profile, arch=None)       -> struct sock_filter[] bytes for x86_64 or aarch64
    compile_notes(profile, arch=None)         what compiling skipped, and why (names the arch lacks ...)
    default_program(caps, arch=None)          compile_profile(default_profile(caps)), cached per (arch, caps)
    program_for(profile_or_None, caps)        -> (program, flags): what a launcher needs, before it forks
    install(program, flags=0)                 seccomp(SECCOMP_SET_MODE_FILTER) on the calling thread

A launcher compiles in the parent (``program_for``), then in the child, after
capabilities and PR_SET_NO_NEW_PRIVS and just before execve, calls
``install(program, flags)``.  The filter must allow execve and whatever the
launcher still does after installing it (the default profile does).

Semantics, chosen to match runc + libseccomp where the OCI spec is silent:

* Names the architecture does not have are skipped (``compile_notes`` lists
  them), as runc does; unknown actions, ops, architectures or flags are errors.
* A rule whose outcome equals the default action is dropped, as runc drops it.
* For one syscall, a rule without ``args`` wins; rules with ``args`` are tried
  in profile order and the first whose comparisons all hold decides; if none
  does, the default action applies.  Two argument-less rules with different
  outcomes for one syscall are an error (libseccomp refuses them too).
* ``errnoRet`` defaults to EPERM for SCMP_ACT_ERRNO and SCMP_ACT_TRACE.
* Unless the default action is ALLOW or LOG, syscall numbers above the highest
  one the profile names return ENOSYS, so libc falls back from syscalls newer
  than the profile (runc does the same).
* Only the native ABI is compiled.  Any other ``seccomp_data.arch`` (i386 via
  ``int 0x80``, arm32 compat) and, on x86_64, every x32 number kills the
  process: none of them can slip past rules written for native numbers.
  32-bit binaries therefore do not run under a filter; the profile's
  SCMP_ARCH_X86/X32/ARM entries are reported by ``compile_notes``.
* Syscall number -1 (how a tracer skips a syscall; the kernel then runs nothing)
  is allowed, so a tracer's chosen return value stands.
* SCMP_ACT_NOTIFY (a seccomp agent on ``listenerPath``) is not supported.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import bpf
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import syscall_table
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc as _libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

ACTIONS = {
    "SCMP_ACT_KILL": bpf.SECCOMP_RET_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": bpf.SECCOMP_RET_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": bpf.SECCOMP_RET_KILL_PROCESS,
    "SCMP_ACT_TRAP": bpf.SECCOMP_RET_TRAP,
    "SCMP_ACT_ERRNO": bpf.SECCOMP_RET_ERRNO,
    "SCMP_ACT_TRACE": bpf.SECCOMP_RET_TRACE,
    "SCMP_ACT_ALLOW": bpf.SECCOMP_RET_ALLOW,
    "SCMP_ACT_LOG": bpf.SECCOMP_RET_LOG,
}
_ACTIONS_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
MAX_ERRNO = 4095   # include/linux/err.h; the kernel clamps SECCOMP_RET_ERRNO data to it

FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": _libc.SECCOMP_FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": _libc.SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _libc.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    # Only meaningful with a notify listener, which is unsupported; accepted and ignored.
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 0,
}

# The OCI runtime spec's list (config-linux.md, "seccomp").
ARCHITECTURES = frozenset([
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K", "SCMP_ARCH_SH", "SCMP_ARCH_SHEB",
])


@dataclass(frozen=True)
class _Arch:
    name: str
    scmp: str
    audit: int
    table: t.Mapping[str, int]
    refuse_x32: bool
    compat: t.Tuple[str, ...]      # SCMP names of the 32-bit ABIs this CPU can also enter


_ARCHES = {
    "x86_64": _Arch("x86_64", "SCMP_ARCH_X86_64", bpf.AUDIT_ARCH_X86_64, syscall_table.X86_64, True,
                    ("SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    "aarch64": _Arch("aarch64", "SCMP_ARCH_AARCH64", bpf.AUDIT_ARCH_AARCH64, syscall_table.AARCH64, False,
                     ("SCMP_ARCH_ARM",)),
}
_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "SCMP_ARCH_X86_64": "x86_64",
                 "aarch64": "aarch64", "arm64": "aarch64", "SCMP_ARCH_AARCH64": "aarch64"}

# Foreign ABIs and x32 numbers: the process dies with SIGSYS (audit-logged), loud rather than subtle.
BAD_ARCH_RET = bpf.SECCOMP_RET_KILL_PROCESS


@dataclass
class SeccompArg:
    """``linux.seccomp.syscalls[].args[]``: compare argument ``index`` (64-bit) with ``value``."""

    index: int
    value: int
    op: str
    value_two: int = 0


@dataclass
class SyscallRule:
    """``linux.seccomp.syscalls[]``: ``action`` for ``names`` when every arg comparison holds."""

    names: t.List[str]
    action: str
    errno_ret: t.Optional[int] = None
    args: t.List[SeccompArg] = field(default_factory=list)


@dataclass
class Profile:
    """``linux.seccomp`` of an OCI bundle's config.json."""

    default_action: str = "SCMP_ACT_ERRNO"
    default_errno_ret: t.Optional[int] = None
    architectures: t.List[str] = field(default_factory=list)
    flags: t.List[str] = field(default_factory=list)
    syscalls: t.List[SyscallRule] = field(default_factory=list)

    @classmethod
    def from_oci(cls, data: t.Any) -> "Profile":
        return from_oci(data)

    def to_oci(self) -> t.Dict[str, t.Any]:
        out: t.Dict[str, t.Any] = {"defaultAction": self.default_action}
        if self.default_errno_ret is not None:
            out["defaultErrnoRet"] = self.default_errno_ret
        if self.architectures:
            out["architectures"] = list(self.architectures)
        if self.flags:
            out["flags"] = list(self.flags)
        if self.syscalls:
            out["syscalls"] = [_rule_to_oci(rule) for rule in self.syscalls]
        return out

    def validate(self) -> "Profile":
        """Raise ValidationError naming the offending field; return self."""
        from_oci(self.to_oci())
        return self

    def install_flags(self) -> int:
        """The seccomp(2) flags word for ``install``."""
        value = 0
        for name in self.flags:
            value |= FLAGS[name]
        return value


def _rule_to_oci(rule: SyscallRule) -> t.Dict[str, t.Any]:
    out: t.Dict[str, t.Any] = {"names": list(rule.names), "action": rule.action}
    if rule.errno_ret is not None:
        out["errnoRet"] = rule.errno_ret
    if rule.args:
        out["args"] = [{"index": arg.index, "value": arg.value, "valueTwo": arg.value_two, "op": arg.op}
                       for arg in rule.args]
    return out


# --- parsing and validation ---------------------------------------------------

def _fail(where: str, text: str) -> t.NoReturn:
    raise ValidationError("%s: %s" % (where, text))


def _check_keys(data: t.Any, where: str, allowed: t.Iterable[str], required: t.Iterable[str] = ()) -> None:
    if not isinstance(data, dict):
        _fail(where, "must be an object, got %s" % type(data).__name__)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        hint = ""
        if set(unknown) & {"includes", "excludes", "archMap", "name"}:
            hint = " (Docker profile syntax: load it with from_docker)"
        _fail(where, "unknown key(s) %s%s" % (", ".join(repr(k) for k in unknown), hint))
    for key in required:
        if key not in data:
            _fail(where, "%r is required" % key)


def _uint(value: t.Any, where: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        _fail(where, "must be an integer from 0 to %d, got %r" % (high, value))
    return value


def _action(value: t.Any, where: str) -> str:
    if value == "SCMP_ACT_NOTIFY":
        _fail(where, "SCMP_ACT_NOTIFY needs a seccomp agent on listenerPath, which is not supported")
    if value not in ACTIONS:
        _fail(where, "unknown action %r; expected one of %s" % (value, ", ".join(sorted(ACTIONS))))
    return value


def _errno_ret(data: t.Dict[str, t.Any], key: str, action: str, where: str) -> t.Optional[int]:
    if data.get(key) is None:
        return None
    if action not in _ACTIONS_WITH_ERRNO:
        _fail("%s.%s" % (where, key), "only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not %s" % action)
    return _uint(data[key], "%s.%s" % (where, key), MAX_ERRNO)


def _string_list(value: t.Any, where: str, allowed: t.Optional[t.Iterable[str]] = None) -> t.List[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        _fail(where, "must be a list of non-empty strings, got %r" % (value,))
    if allowed is not None:
        unknown = [item for item in value if item not in allowed]
        if unknown:
            _fail(where, "unknown value(s) %s" % ", ".join(repr(item) for item in unknown))
    return list(value)


def _arg_from_oci(data: t.Any, where: str) -> SeccompArg:
    _check_keys(data, where, ("index", "value", "valueTwo", "op"), ("index", "value", "op"))
    op = data["op"]
    if op not in bpf.OPS:
        _fail(where + ".op", "unknown operator %r; expected one of %s" % (op, ", ".join(bpf.OPS)))
    return SeccompArg(index=_uint(data["index"], where + ".index", 5),
                      value=_uint(data["value"], where + ".value", 2 ** 64 - 1),
                      value_two=_uint(data.get("valueTwo", 0), where + ".valueTwo", 2 ** 64 - 1),
                      op=op)


def _rule_from_oci(data: t.Any, where: str) -> SyscallRule:
    _check_keys(data, where, ("names", "action", "errnoRet", "args", "comment"), ("names", "action"))
    names = _string_list(data["names"], where + ".names")
    if not names:
        _fail(where + ".names", "must name at least one syscall")
    action = _action(data["action"], where + ".action")
    args = data.get("args")
    args = [] if args is None else args
    if not isinstance(args, list):
        _fail(where + ".args", "must be a list, got %r" % (args,))
    return SyscallRule(names=names, action=action, errno_ret=_errno_ret(data, "errnoRet", action, where),
                       args=[_arg_from_oci(arg, "%s.args[%d]" % (where, i)) for i, arg in enumerate(args)])


def from_oci(data: t.Any, where: str = "linux.seccomp") -> Profile:
    """Validate and convert the ``linux.seccomp`` object of a config.json."""
    _check_keys(data, where, ("defaultAction", "defaultErrnoRet", "architectures", "flags", "syscalls",
                              "listenerPath", "listenerMetadata"), ("defaultAction",))
    if data.get("listenerPath") or data.get("listenerMetadata"):
        _fail(where + ".listenerPath", "seccomp notify agents are not supported")
    default_action = _action(data["defaultAction"], where + ".defaultAction")
    syscalls = data.get("syscalls")
    syscalls = [] if syscalls is None else syscalls
    if not isinstance(syscalls, list):
        _fail(where + ".syscalls", "must be a list, got %r" % (syscalls,))
    return Profile(
        default_action=default_action,
        default_errno_ret=_errno_ret(data, "defaultErrnoRet", default_action, where),
        architectures=_string_list(data.get("architectures"), where + ".architectures", ARCHITECTURES),
        flags=_string_list(data.get("flags"), where + ".flags", FLAGS),
        syscalls=[_rule_from_oci(rule, "%s.syscalls[%d]" % (where, i)) for i, rule in enumerate(syscalls)])


# --- compiling ----------------------------------------------------------------

def native_arch() -> str:
    return resolve_arch(None)


def resolve_arch(arch: t.Optional[str]) -> str:
    """``x86_64`` or ``aarch64`` for ``arch`` (also amd64/arm64/SCMP_ARCH_*), or the machine's own."""
    name = arch if arch is not None else os.uname().machine
    if name not in _ARCH_ALIASES:
        raise ValidationError("seccomp: architecture %r is not supported by the built-in compiler "
                              "(supported: x86_64, aarch64)" % name)
    return _ARCH_ALIASES[name]


def _ret(action: str, errno_ret: t.Optional[int]) -> int:
    base = ACTIONS[action]
    if action in _ACTIONS_WITH_ERRNO:
        return base | (errno.EPERM if errno_ret is None else errno_ret)
    return base


def _plans(profile: Profile, arch: _Arch) -> t.Tuple[t.Dict[int, bpf.Plan], t.Optional[int], t.List[str]]:
    """Resolve names to numbers and rules to one plan per syscall number."""
    default_ret = _ret(profile.default_action, profile.default_errno_ret)
    fixed: t.Dict[int, t.List[t.Tuple[int, str]]] = {}
    branches: t.Dict[int, t.List[bpf.Branch]] = {}
    skipped: t.List[str] = []
    highest: t.Optional[int] = None
    for rule in profile.syscalls:
        ret = _ret(rule.action, rule.errno_ret)
        checks = tuple(bpf.Check(arg.index, arg.op, arg.value, arg.value_two) for arg in rule.args)
        for name in rule.names:
            nr = arch.table.get(name)
            if nr is None:
                skipped.append(name)
                continue
            highest = nr if highest is None else max(highest, nr)
            if ret == default_ret:
                continue
            if checks:
                branches.setdefault(nr, []).append(bpf.Branch(checks, ret))
            else:
                fixed.setdefault(nr, []).append((ret, rule.action))
    plans: t.Dict[int, bpf.Plan] = {nr: tuple(found) for nr, found in branches.items()}
    names = dict((nr, name) for name, nr in arch.table.items())
    for nr, outcomes in fixed.items():
        # Rules without args that disagree: the first one decides, as in libseccomp (runc's and crun's
        # compiler), which is how the profiles clients generate are meant (podman's allows setns, then
        # lists it again under ERRNO); compile_notes names them.
        plans[nr] = outcomes[0][0]
    if (default_ret & bpf.SECCOMP_RET_ACTION_FULL) in (bpf.SECCOMP_RET_ALLOW, bpf.SECCOMP_RET_LOG):
        highest = None
    return plans, highest, skipped


def compile_profile(profile: Profile, arch: t.Optional[str] = None) -> bytes:
    """``struct sock_filter[]`` bytes enforcing ``profile`` for ``arch`` (default: this machine)."""
    target = _ARCHES[resolve_arch(arch)]
    plans, highest, _skipped = _plans(profile, target)
    default_ret = _ret(profile.default_action, profile.default_errno_ret)
    try:
        return bpf.build_program(target.audit, plans, default_ret, BAD_ARCH_RET,
                                 refuse_x32=target.refuse_x32, enosys_above=highest)
    except ValueError as exc:
        raise ValidationError("seccomp: %s" % exc)


def compile_notes(profile: Profile, arch: t.Optional[str] = None) -> t.List[str]:
    """Human-readable notes on what ``compile_profile`` leaves out for ``arch``."""
    target = _ARCHES[resolve_arch(arch)]
    _plans_, _highest, skipped = _plans(profile, target)
    notes = []
    other = sorted(set(name for name in skipped if name in syscall_table.OTHER_ABI_NAMES
                       or name in _ARCHES["x86_64"].table or name in _ARCHES["aarch64"].table))
    unknown = sorted(set(skipped) - set(other))
    if other:
        notes.append("skipped %d syscall name(s) %s does not have: %s" % (len(other), target.name, ", ".join(other)))
    if unknown:
        notes.append("skipped unknown syscall name(s) (typo, or newer than this table?): %s" % ", ".join(unknown))
    compat = [name for name in profile.architectures if name in target.compat]
    if compat:
        notes.append("%s not compiled: only the native %s ABI is; other ABIs kill the process"
                     % (", ".join(compat), target.scmp))
    first: t.Dict[str, t.Tuple[int, str]] = {}
    overridden = set()
    default_ret = _ret(profile.default_action, profile.default_errno_ret)
    for rule in profile.syscalls:
        ret = _ret(rule.action, rule.errno_ret)
        if rule.args or ret == default_ret:
            continue
        for name in rule.names:
            kept = first.setdefault(name, (ret, rule.action))
            if kept[0] != ret:
                overridden.add("%s (%s kept, %s ignored)" % (name, kept[1], rule.action))
    if overridden:
        notes.append("conflicting rules without args, the first kept as libseccomp does: %s"
                     % ", ".join(sorted(overridden)))
    if "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" in profile.flags:
        notes.append("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV ignored: it only applies to notify listeners")
    return notes


def normalise_capabilities(capabilities: t.Iterable[str]) -> t.FrozenSet[str]:
    """``{"sys_admin", "CAP_SYS_PTRACE"}`` -> ``frozenset({"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"})``."""
    if isinstance(capabilities, str):
        capabilities = [capabilities]
    out = set()
    for cap in capabilities:
        name = str(cap).upper()
        out.add(name if name.startswith("CAP_") else "CAP_" + name)
    return frozenset(out)


def default_profile(capabilities: t.Iterable[str] = (), arch: t.Optional[str] = None) -> Profile:
    """Docker's default policy for a container whose bounding set is ``capabilities`` (seccomp_default.py)."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import default as seccomp_default
    return seccomp_default.default_profile(capabilities, arch)


def from_docker(data: t.Any, capabilities: t.Iterable[str] = (), arch: t.Optional[str] = None,
                kernel: t.Optional[str] = None) -> Profile:
    """A Docker/moby profile file resolved for one container (seccomp_default.py)."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import default as seccomp_default
    return seccomp_default.from_docker(data, capabilities, arch, kernel)


def default_program(capabilities: t.Iterable[str] = (), arch: t.Optional[str] = None) -> bytes:
    """The compiled default profile for a capability set; compiled once per (arch, set) per process."""
    return _default_program_cached(resolve_arch(arch), normalise_capabilities(capabilities))


@functools.lru_cache(maxsize=64)
def _default_program_cached(arch: str, capabilities: t.FrozenSet[str]) -> bytes:
    return compile_profile(default_profile(capabilities, arch), arch)


def program_for(profile: t.Optional[Profile], capabilities: t.Iterable[str] = (),
                arch: t.Optional[str] = None) -> t.Tuple[bytes, int]:
    """(program, install flags) for a container: its own profile, or the cached default for its caps.

    Call it in the parent, before forking, so a bad profile fails before anything
    is created and the child only has to ``install(program, flags)``.
    """
    if profile is None:
        return default_program(capabilities, arch), 0
    return compile_profile(profile, arch), profile.install_flags()


# --- installing ---------------------------------------------------------------

class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_INSTALL_HINTS = {
    errno.EACCES: "the thread needs no_new_privs (PR_SET_NO_NEW_PRIVS) or CAP_SYS_ADMIN",
    errno.EINVAL: "the kernel rejected the program or the flags",
    errno.ENOMEM: "the filters attached to this thread would exceed the kernel's 32768-instruction total",
    errno.EFAULT: "the program buffer was not readable",
}


def install(program: bytes, flags: int = 0, libc: t.Optional[t.Any] = None) -> None:
    """Attach ``program`` to the calling thread (and, with TSYNC, all its threads); irreversible."""
    count = len(program) // 8
    if len(program) % 8 or not 0 < count <= bpf.BPF_MAXINSNS:
        raise ValueError("seccomp: a filter is 1 to %d instructions of 8 bytes, got %d bytes"
                         % (bpf.BPF_MAXINSNS, len(program)))
    buffer = ctypes.create_string_buffer(bytes(program), len(program))
    prog = _SockFprog(count, ctypes.cast(buffer, ctypes.c_void_p))
    what = "seccomp(SECCOMP_SET_MODE_FILTER, flags=%#x, %d instructions)" % (flags, count)
    try:
        ret = _libc.syscall("seccomp", ctypes.c_uint(_libc.SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags),
                            ctypes.byref(prog), libc=libc)
    except OSError as exc:
        if exc.errno == errno.ENOSYS and flags == 0:   # kernels before 3.17: only the prctl interface
            try:
                _libc.prctl(_libc.PR_SET_SECCOMP, _libc.SECCOMP_MODE_FILTER, ctypes.addressof(prog), libc=libc)
                return
            except OSError as prctl_exc:
                exc = prctl_exc
        hint = _INSTALL_HINTS.get(exc.errno or 0)
        raise OSError(exc.errno, "%s failed: %s%s" % (what, os.strerror(exc.errno or 0),
                                                      " (%s)" % hint if hint else ""))
    if ret > 0:   # TSYNC: the id of a thread that could not be synchronised
        raise OSError(errno.ESRCH, "%s failed: thread %d could not be synchronised" % (what, ret))
