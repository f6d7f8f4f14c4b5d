# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the default seccomp profile, and Docker-format profiles.

``default_profile(capabilities)`` follows Docker's default profile
(moby profiles/seccomp/default.json, v28 / 2025, which containerd's
RuntimeDefault mirrors): an **allowlist**.  The default action is
ERRNO(EPERM); about 305 x86_64 syscalls are allowed (3 more by argument); more only
when the container holds the capability that governs it (CAP_SYS_ADMIN
re-allows mount, unshare, setns, clone with namespace flags, bpf ...).  An
allowlist was chosen over "allow + deny list" because a syscall added to a
future kernel is then refused until someone decides it is safe, instead of
being open until someone notices; the numbers above the newest one the
profile names return ENOSYS so libc falls back gracefully (see seccomp.py).
The price is that a workload needing a syscall outside the list fails with
EPERM (or ENOSYS) and needs a custom profile, exactly as under Docker.

Deliberate differences from Docker's file, each stricter or equal:

* ptrace, process_vm_readv and process_vm_writev need CAP_SYS_PTRACE.  Docker
  allows them to everyone on kernels >= 4.8 (when ptrace stopped being a way
  around seccomp).  Ptrace is still a large attack surface (e.g.
  CVE-2019-13272) that few services need; strace or gdb inside a container
  work once CAP_SYS_PTRACE is granted, as Docker's own docs advise.
* socket(AF_VSOCK) is refused with exact-match rules.  Docker's single
  ``arg0 != 40`` rule compares all 64 bits while the kernel reads an int, so
  ``0x100000028`` passes the filter and still opens a vsock socket.  Ours
  allows families 0-39 and 41-63 only when the upper 32 bits are zero.
* io_uring_setup/enter/register are refused (Docker >= 25 does the same;
  io_uring operations are invisible to seccomp).
* open_tree_attr (Linux 6.15) is gated by CAP_SYS_ADMIN like open_tree.

Arch-specific entries for i386, arm32, s390, ppc and riscv are omitted: the
compiler builds x86_64 and aarch64 filters only and refuses every other ABI.
"""

from __future__ import annotations

import os
import re
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import profile as _seccomp
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.libc import (
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS)
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

_ALLOWED = """
    accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
    clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep
    clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3 epoll_create
    epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2
    execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
    fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork
    fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex
    futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64
    getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid
    getpgrp getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
    get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32
    getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl
    io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill
    landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
    listen listmount listxattr listxattrat llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise
    map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
    mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
    mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall
    munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
    pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64
    preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
    readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr
    removexattrat rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending
    rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
    rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
    sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
    sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl semget
    semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
    setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid
    setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list
    setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr setxattrat shmat shmctl shmdt
    shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice stat
    stat64 statfs statfs64 statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill
    time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
    timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate
    truncate64 ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat utimensat_time64 utimes vfork
    vmsplice wait4 waitid waitpid write writev
""".split()

# Capability -> the syscalls it re-allows (moby default_linux.go "includes: caps").
_GATED = (
    ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]),
    ("CAP_SYS_ADMIN", ["bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
                       "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "mount",
                       "mount_setattr", "move_mount", "open_tree", "open_tree_attr", "perf_event_open", "quotactl",
                       "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2",
                       "unshare"]),
    ("CAP_SYS_BOOT", ["reboot"]),
    ("CAP_SYS_CHROOT", ["chroot"]),
    ("CAP_SYS_MODULE", ["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", ["acct"]),
    ("CAP_SYS_PTRACE", ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
                        "ptrace"]),
    ("CAP_SYS_RAWIO", ["iopl", "ioperm"]),
    ("CAP_SYS_TIME", ["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    ("CAP_SYS_TTY_CONFIG", ["vhangup"]),
    ("CAP_SYS_NICE", ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", ["syslog"]),
    ("CAP_BPF", ["bpf"]),
    ("CAP_PERFMON", ["perf_event_open"]),
)

CLONE_NAMESPACE_FLAGS = (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
                         | CLONE_NEWCGROUP)
AF_VSOCK = 40
_UPPER_32 = 0xFFFFFFFF00000000


def _docker_default() -> t.Dict[str, t.Any]:
    """Docker's default profile in Docker's own file format (with includes/excludes)."""
    allow = "SCMP_ACT_ALLOW"
    rules: t.List[t.Dict[str, t.Any]] = [{"names": list(_ALLOWED), "action": allow}]
    # socket: every family but AF_VSOCK (not namespaced: it reaches the hypervisor), exact on all 64 bits.
    socket_rules = [("SCMP_CMP_LE", AF_VSOCK - 1, 0), ("SCMP_CMP_EQ", AF_VSOCK + 1, 0)]
    socket_rules += [("SCMP_CMP_MASKED_EQ", _UPPER_32 | ~(size - 1) & 0xFFFFFFFF, first)
                     for first, size in ((42, 2), (44, 4), (48, 16))]
    for op, value, value_two in socket_rules:
        rules.append({"names": ["socket"], "action": allow,
                      "args": [{"index": 0, "value": value, "valueTwo": value_two, "op": op}]})
    # personality: only the harmless personas (PER_LINUX, PER_LINUX32, UNAME26 variants, and the query).
    for persona in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF):
        rules.append({"names": ["personality"], "action": allow,
                      "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]})
    rules.append({"names": ["arch_prctl"], "action": allow, "includes": {"arches": ["amd64"]}})
    rules.append({"names": ["modify_ldt"], "action": allow, "includes": {"arches": ["amd64"]}})
    for cap, names in _GATED:
        rules.append({"names": names, "action": allow, "includes": {"caps": [cap]}})
    # Without CAP_SYS_ADMIN: clone only without namespace flags; clone3 hides its flags in memory
    # seccomp cannot read, so it reports ENOSYS and libc falls back to clone.
    rules.append({"names": ["clone"], "action": allow, "excludes": {"caps": ["CAP_SYS_ADMIN"]},
                  "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]})
    rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                  "excludes": {"caps": ["CAP_SYS_ADMIN"]}})
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []},
                        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": []}],
            "syscalls": rules}


def default_profile(capabilities: t.Iterable[str] = (), arch: t.Optional[str] = None) -> "_seccomp.Profile":
    """Docker's default policy for a container whose bounding set is ``capabilities``.

    Names the target architecture lacks (Docker's list covers the 32-bit ABIs
    too) are dropped, so ``to_oci()`` is this architecture's exact profile.
    """
    profile = from_docker(_docker_default(), capabilities, arch)
    table = _seccomp._ARCHES[_seccomp.resolve_arch(arch)].table
    for rule in profile.syscalls:
        rule.names = [name for name in rule.names if name in table]
    profile.syscalls = [rule for rule in profile.syscalls if rule.names]
    return profile


# Docker/Go architecture names of each native arch, as used in includes/excludes "arches".
_DOCKER_ARCH_NAMES = {"x86_64": ("amd64", "x86_64"), "aarch64": ("arm64", "aarch64")}


def _version(text: str) -> t.Tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", text)
    if not match:
        raise ValidationError("seccomp: kernel version %r is not MAJOR.MINOR" % text)
    return int(match.group(1)), int(match.group(2))


def _applies(rule: t.Dict[str, t.Any], where: str, caps: t.FrozenSet[str], arches: t.Tuple[str, ...],
             kernel: t.Tuple[int, int]) -> bool:
    for key in ("includes", "excludes"):
        _seccomp._check_keys(rule.get(key) or {}, "%s.%s" % (where, key), ("caps", "arches", "minKernel"))
    includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
    if includes.get("caps") and not _seccomp.normalise_capabilities(includes["caps"]) <= caps:
        return False
    if includes.get("arches") and not set(includes["arches"]) & set(arches):
        return False
    if includes.get("minKernel") and kernel < _version(includes["minKernel"]):
        return False
    if excludes.get("caps") and _seccomp.normalise_capabilities(excludes["caps"]) & caps:
        return False
    if excludes.get("arches") and set(excludes["arches"]) & set(arches):
        return False
    if excludes.get("minKernel") and kernel >= _version(excludes["minKernel"]):
        return False
    return True


def from_docker(data: t.Any, capabilities: t.Iterable[str] = (), arch: t.Optional[str] = None,
                kernel: t.Optional[str] = None) -> "_seccomp.Profile":
    """Resolve a Docker/moby seccomp profile file for one container, as dockerd does.

    ``includes``/``excludes`` are evaluated against ``capabilities`` (the
    bounding set), the architecture and the kernel release (default: running).
    """
    where = "seccomp"
    _seccomp._check_keys(data, where, ("defaultAction", "defaultErrnoRet", "architectures", "archMap", "flags",
                                       "syscalls", "listenerPath", "listenerMetadata"), ("defaultAction",))
    native = _seccomp.resolve_arch(arch)
    scmp = _seccomp._ARCHES[native].scmp
    caps = _seccomp.normalise_capabilities(capabilities)
    release = _version(kernel or os.uname().release)
    architectures = data.get("architectures") or []
    for entry in data.get("archMap") or []:
        _seccomp._check_keys(entry, where + ".archMap[]", ("architecture", "subArchitectures"), ("architecture",))
        if entry["architecture"] == scmp:
            architectures = [scmp] + list(entry.get("subArchitectures") or [])
    syscalls = data.get("syscalls")
    syscalls = [] if syscalls is None else syscalls
    if not isinstance(syscalls, list):
        raise ValidationError("%s.syscalls: must be a list" % where)
    rules = []
    for index, rule in enumerate(syscalls):
        path = "%s.syscalls[%d]" % (where, index)
        _seccomp._check_keys(rule, path, ("names", "name", "action", "errnoRet", "args", "comment", "includes",
                                          "excludes"), ("action",))
        if not _applies(rule, path, caps, _DOCKER_ARCH_NAMES[native], release):
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else None)
        oci = {"names": names, "action": rule["action"]}
        for key in ("errnoRet", "args"):
            if rule.get(key) is not None:
                oci[key] = rule[key]
        rules.append(_seccomp._rule_from_oci(oci, path))
    top = {"defaultAction": data["defaultAction"], "architectures": architectures, "flags": data.get("flags")}
    if data.get("defaultErrnoRet") is not None:
        top["defaultErrnoRet"] = data["defaultErrnoRet"]
    profile = _seccomp.from_oci(top, where)
    profile.syscalls = rules
    return profile
