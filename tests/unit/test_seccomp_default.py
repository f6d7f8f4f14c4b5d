# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The default profile's decision for every x86_64 syscall, per capability set.

The expectations are written here from Docker's documentation ("Significant
syscalls blocked by the default profile") and moby's capability rules, not
read from the code under test.
"""

import pytest

from harness import cbpf

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import profile as seccomp
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp.syscall_table import AARCH64, X86_64

ALLOW = ("ALLOW", None)
EPERM = ("ERRNO", 1)
ENOSYS = ("ERRNO", 38)
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS, SIGCHLD = 0x10000000, 0x40000000, 0x00020000, 17
FORK_FLAGS = 0x01200000 | SIGCHLD   # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD, what glibc fork() uses
THREAD_FLAGS = 0x003D0F00           # pthread_create: VM FS FILES SIGHAND THREAD SYSVSEM SETTLS PARENT_SETTID ...

BLOCKED = """
    keyctl add_key request_key mount umount2 pivot_root unshare setns kexec_load kexec_file_load bpf
    perf_event_open ptrace open_by_handle_at init_module finit_module delete_module reboot swapon swapoff acct
    settimeofday clock_settime syslog userfaultfd lookup_dcookie quotactl quotactl_fd nfsservctl uselib ustat
    sysfs _sysctl iopl ioperm create_module get_kernel_syms query_module fsopen fsconfig fsmount fspick
    open_tree move_mount mount_setattr pidfd_getfd process_vm_readv process_vm_writev
    process_madvise kcmp set_mempolicy get_mempolicy mbind move_pages migrate_pages set_mempolicy_home_node
    io_uring_setup io_uring_enter io_uring_register vhangup chroot sethostname setdomainname fanotify_init
    lsm_get_self_attr lsm_set_self_attr lsm_list_modules afs_syscall tuxcall security vserver getpmsg putpmsg
    uprobe
""".split()

ALLOWED = """
    read write open openat openat2 close close_range stat fstat lstat newfstatat statx poll ppoll lseek mmap
    mprotect munmap mremap brk rt_sigaction rt_sigprocmask rt_sigreturn ioctl pread64 pwrite64 readv writev
    access faccessat faccessat2 pipe pipe2 select pselect6 sched_yield madvise dup dup2 dup3 nanosleep
    clock_nanosleep getpid gettid getppid sendfile connect accept accept4 sendto recvfrom sendmsg recvmsg
    shutdown bind listen getsockname getpeername socketpair setsockopt getsockopt fork vfork execve execveat
    exit exit_group wait4 waitid kill tgkill uname fcntl flock fsync fdatasync truncate ftruncate getdents64
    getcwd chdir fchdir rename renameat2 mkdir rmdir unlink unlinkat symlink readlink chmod fchmod fchmodat2
    chown fchown umask gettimeofday clock_gettime getrlimit prlimit64 getrusage sysinfo times getuid setuid
    setgid setgroups setresuid capget capset sigaltstack futex futex_waitv set_robust_list set_tid_address
    epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2 eventfd2 signalfd4 timerfd_create
    inotify_init1 getrandom memfd_create rseq membarrier pidfd_open pidfd_send_signal arch_prctl modify_ldt
    seccomp prctl name_to_handle_at clock_adjtime adjtimex mlock copy_file_range splice tee landlock_create_ruleset
    sched_setaffinity sched_getaffinity ioprio_set io_setup io_submit cachestat fchmodat2 map_shadow_stack
    futex_wake futex_wait futex_requeue statmount listmount mseal setxattrat getxattrat listxattrat
    removexattrat uretprobe
""".split()

GATED = {
    "CAP_SYS_ADMIN": """bpf clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie lsm_get_self_attr
                        lsm_list_modules lsm_set_self_attr mount mount_setattr move_mount open_tree open_tree_attr
                        perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog umount2
                        unshare""",
    "CAP_SYS_PTRACE": "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
    "CAP_SYS_MODULE": "delete_module init_module finit_module",
    "CAP_SYS_BOOT": "reboot",
    "CAP_SYS_CHROOT": "chroot",
    "CAP_SYS_PACCT": "acct",
    "CAP_SYS_RAWIO": "iopl ioperm",
    "CAP_SYS_TIME": "settimeofday clock_settime",
    "CAP_SYS_TTY_CONFIG": "vhangup",
    "CAP_SYS_NICE": "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    "CAP_SYSLOG": "syslog",
    "CAP_BPF": "bpf",
    "CAP_PERFMON": "perf_event_open",
    "CAP_DAC_READ_SEARCH": "open_by_handle_at",
    "CAP_NET_ADMIN": "",
}

DOCKER_DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                       "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                       "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]


def decisions(caps, arch="x86_64"):
    table, audit = (X86_64, cbpf.AUDIT_ARCH_X86_64) if arch == "x86_64" else (AARCH64, cbpf.AUDIT_ARCH_AARCH64)
    program = cbpf.decode(seccomp.default_program(caps, arch))
    return {name: cbpf.action(cbpf.run(program, nr, audit)) for name, nr in table.items()}


def decide(caps, name, args=()):
    return cbpf.action(cbpf.run(seccomp.default_program(caps, "x86_64"), X86_64[name], cbpf.AUDIT_ARCH_X86_64, args))


def test_every_syscall_has_the_expected_decision_without_capabilities():
    got = decisions([])
    assert set(BLOCKED) <= set(X86_64) and set(ALLOWED) <= set(X86_64)
    assert {name: got[name] for name in BLOCKED} == {name: EPERM for name in BLOCKED}
    assert {name: got[name] for name in ALLOWED} == {name: ALLOW for name in ALLOWED}
    assert got["clone3"] == ENOSYS
    # Newer than every syscall this profile names: ENOSYS, so callers fall back (open_tree_attr is named
    # only in the CAP_SYS_ADMIN rule, which this capability set drops).
    assert got["listns"] == got["file_setattr"] == got["open_tree_attr"] == ENOSYS
    assert set(got.values()) == {ALLOW, EPERM, ENOSYS}
    allowed = sorted(name for name, decision in got.items() if decision == ALLOW)
    assert 295 <= len(allowed) <= 320, len(allowed)                      # a big drop or growth needs a look


@pytest.mark.parametrize("cap", sorted(GATED))
def test_each_capability_reallows_exactly_its_syscalls(cap):
    base, granted = decisions([]), decisions([cap])
    flipped = set(name for name in X86_64 if base[name] != granted[name])
    assert flipped == set(GATED[cap].split())
    assert all(granted[name] == ALLOW for name in flipped)


def test_docker_default_capabilities_only_add_chroot():
    base, granted = decisions([]), decisions(DOCKER_DEFAULT_CAPS)
    assert set(name for name in X86_64 if base[name] != granted[name]) == {"chroot"}


def test_clone_namespace_flags_need_cap_sys_admin():
    assert decide([], "clone", [FORK_FLAGS]) == ALLOW
    assert decide([], "clone", [THREAD_FLAGS]) == ALLOW
    for flag in (CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS, 0x02000000, 0x04000000, 0x08000000, 0x20000000):
        assert decide([], "clone", [flag | SIGCHLD]) == EPERM, hex(flag)
        assert decide(["CAP_SYS_ADMIN"], "clone", [flag | SIGCHLD]) == ALLOW
    assert decide([], "clone", [0xFFFFFFFF00000000 | FORK_FLAGS]) == ALLOW     # upper bits are ignored by the kernel
    assert decide([], "clone3") == ENOSYS and decide(["CAP_SYS_ADMIN"], "clone3") == ALLOW


def test_socket_refuses_vsock_even_with_junk_in_the_upper_half():
    for family in (0, 1, 2, 10, 16, 17, 39, 41, 42, 43, 44, 45, 46, 47, 48, 63):
        assert decide([], "socket", [family, 1, 0]) == ALLOW, family
    for family in (40, 0x100000028, 0xFFFFFFFF00000028, 64, 0x100000002, 2 ** 63):
        assert decide([], "socket", [family, 1, 0]) == EPERM, hex(family)


def test_personality_allows_only_the_harmless_personas():
    for persona in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert decide([], "personality", [persona]) == ALLOW
    for persona in (0x0040000, 0x0200000, 0x0400000, 0x100000000, 1):   # ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC ...
        assert decide([], "personality", [persona]) == EPERM


def test_aarch64_default_profile():
    got = decisions([], "aarch64")
    assert got["read"] == ALLOW and got["mount"] == EPERM and got["clone3"] == ENOSYS and got["ptrace"] == EPERM
    program = seccomp.default_program([], "aarch64")
    clone = AARCH64["clone"]
    assert cbpf.action(cbpf.run(program, clone, cbpf.AUDIT_ARCH_AARCH64, [FORK_FLAGS])) == ALLOW
    assert cbpf.action(cbpf.run(program, clone, cbpf.AUDIT_ARCH_AARCH64, [CLONE_NEWUSER])) == EPERM
    assert cbpf.action(cbpf.run(program, clone, cbpf.AUDIT_ARCH_ARM, [0])) == ("KILL_PROCESS", None)
    assert "arch_prctl" not in str(seccomp.default_profile([], "aarch64").to_oci())


def test_default_profile_exports_clean_oci_and_round_trips():
    prof = seccomp.default_profile(["CAP_SYS_PTRACE"], "x86_64")
    oci = prof.to_oci()
    assert oci["defaultAction"] == "SCMP_ACT_ERRNO" and oci["defaultErrnoRet"] == 1
    assert oci["architectures"] == ["SCMP_ARCH_X86_64"]
    assert seccomp.compile_notes(prof, "x86_64") == []
    names = set(name for rule in oci["syscalls"] for name in rule["names"])
    assert "chown32" not in names and "ptrace" in names and "mount" not in names
    assert seccomp.compile_profile(seccomp.from_oci(oci), "x86_64") == seccomp.default_program(["CAP_SYS_PTRACE"])


def test_compiled_default_is_cached_per_arch_and_capability_set():
    first = seccomp.default_program(["sys_admin", "CAP_KILL"], "x86_64")
    assert seccomp.default_program({"CAP_KILL", "CAP_SYS_ADMIN"}, "amd64") is first
    assert seccomp.default_program(["CAP_KILL"], "x86_64") != first
    assert seccomp.default_program(["CAP_KILL"], "aarch64") != seccomp.default_program(["CAP_KILL"], "x86_64")
    assert len(first) // 8 < 400       # a small program: cheap for every syscall the container makes


def test_program_for_picks_the_default_or_the_given_profile():
    program, flags = seccomp.program_for(None, "CAP_SYS_ADMIN", "x86_64")     # a lone string is one capability
    assert program is seccomp.default_program(["CAP_SYS_ADMIN"], "x86_64") and flags == 0
    own = seccomp.from_oci({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]})
    program, flags = seccomp.program_for(own, [], "x86_64")
    assert cbpf.action(cbpf.run(program, X86_64["getpid"])) == EPERM and flags == 2
