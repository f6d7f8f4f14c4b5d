# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""container_exec through Ansible, on real busybox containers started by container_process.

What the command saw is checked against the container's init as the host's /proc shows it (namespace
inodes, mount table, root inode, capability lines), never against the runtime code.  Each scenario is one
playbook (an Ansible run costs more than the module work).
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from harness.containers import busybox_rootfs, containers  # noqa: F401  pylint: disable=unused-import
from harness.containers import (alive, build_busybox_rootfs, cgroup_parent, cgroup_procs, leaf_path, status_fields,
                                wait_until)

INIT = ["/bin/sh", "-c", "trap 'exit 7' TERM; echo ready; while :; do sleep 0.2; done"]
STATUS_KEYS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")


def container(name, rootfs, **extra):
    args = {"name": name, "rootfs": rootfs, "command": INIT, "hostname": name, "stop_timeout": 5,
            "cgroup": {"parent": cgroup_parent()}}
    args.update(extra)
    return args


def task(name, module, args, **keywords):
    item = {"name": name, "kernelbox.containers." + module: args}
    item.update(keywords)
    return item


def play(ansible, tasks, **kwargs):
    run = ansible.playbook(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}], indent=1),
                           **kwargs)
    assert run.tasks, "the playbook did not run (rc %d): %s" % (run.rc, run.stderr)
    for item in run.tasks:
        if item.status == "failed":
            raise AssertionError("task %r failed: %s" % (item.task, item.result))
    return run


def exec_task(name, container_name, command, **options):
    args = {"name": container_name, "command": command}
    args.update(options)
    return task(name, "container_exec", args)


def ns_inode(pid, kind):
    return os.stat("/proc/%s/ns/%s" % (pid, kind)).st_ino


def mount_points(text):
    return [line.split()[4] for line in text.splitlines() if line.strip()]


def status_lines(pid):
    fields = status_fields(pid)
    return {key: " ".join(fields[key].split()) for key in STATUS_KEYS}


def parse_status_output(text):
    found = {}
    for line in text.splitlines():
        key, _sep, value = line.partition(":")
        if key in STATUS_KEYS:
            found[key] = " ".join(value.split())
    return found


def processes_named(fragment, exact=False):
    """PIDs whose command line contains ``fragment`` (or is exactly it, with NULs read as spaces)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as handle:
                    cmdline = handle.read().replace(b"\0", b" ")
                if cmdline == fragment if exact else fragment in cmdline:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def exec_groups(leaf):
    return sorted(entry for entry in os.listdir(leaf) if entry.startswith("kb-exec-")) if os.path.isdir(leaf) else []


def test_exec_runs_inside_the_container(ansible, busybox_rootfs, containers):
    name = containers("kbt-exec")
    show = ("echo pid=$$; cat /proc/1/cmdline; echo; hostname; stat -c 'root=%d:%i' /;"
            " for n in cgroup ipc mnt net pid user uts; do echo ns.$n=$(stat -L -c %i /proc/self/ns/$n); done;"
            " grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status; cat /proc/self/cgroup")
    tasks = [
        task("start", "container_process", container(name, busybox_rootfs)),
        exec_task("inside", name, ["sh", "-c", show]),
        exec_task("mounts", name, ["cat", "/proc/self/mountinfo"]),
        exec_task("net only", name, ["sh", "-c", "hostname; ls -a /; stat -L -c %i /proc/self/ns/net;"
                                     " stat -L -c %i /proc/self/ns/mnt; ip -o link"], namespaces=["net"]),
        exec_task("io and identity", name, ["sh", "-c", "cat; echo FOO=$FOO; pwd; id -u; id -g; id -G;"
                                            " grep CapEff /proc/self/status; echo err >&2"],
                  stdin="hello", env={"FOO": "bar baz"}, cwd="/tmp", user="1000:1001", groups=[5, 7]),
        dict(exec_task("non-zero", name, ["sh", "-c", "echo out; exit 3"]), ignore_errors=True),
        dict(exec_task("check mode", name, ["touch", "/tmp/kbt-check-mode"]), check_mode=True),
        exec_task("check mode left nothing", name, ["sh", "-c", "test ! -e /tmp/kbt-check-mode && echo absent"]),
        dict(exec_task("timeout", name, ["sh", "-c", "sleep 301 & sleep 302 & echo started; wait"],
                       timeout=1.5), ignore_errors=True),
        exec_task("background", name, ["sh", "-c", "sleep 303 >/dev/null 2>&1 & echo spawned"]),
        exec_task("flood", name, ["sh", "-c", "head -c 52428800 /dev/zero | tr '\\0' x; echo tail >&2"], timeout=120),
        exec_task("flood stderr", name, ["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' y >&2"],
                  output_limit="64K"),
        exec_task("unlimited", name, ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' z"], output_limit="0"),
    ]
    run = play(ansible, tasks)
    init = run.named("start")["pid"]
    assert alive(init)

    inside = run.named("inside")
    assert inside.changed and inside["rc"] == 0 and inside.actions == ["run %s in %s" % (
        inside["cmd"], name)], inside.result
    lines = inside["stdout_lines"]
    assert lines[0] != "pid=1" and lines[0].startswith("pid=")
    with open("/proc/%d/cmdline" % init, "rb") as handle:  # PID 1 inside is the container's init
        assert lines[1] == handle.read().decode()
    assert lines[2] == name
    root = os.stat("/proc/%d/root" % init)
    assert lines[3] == "root=%d:%d" % (root.st_dev, root.st_ino)
    seen = dict(line.split("=", 1) for line in lines if line.startswith("ns."))
    for kind in ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts"):
        assert int(seen["ns." + kind]) == ns_inode(init, kind), kind
        assert int(seen["ns." + kind]) != ns_inode("self", kind), kind
    assert parse_status_output(inside["stdout"]) == status_lines(init)
    assert parse_status_output(inside["stdout"])["Seccomp"] == "2"
    assert lines[-1].startswith("0::/kb-exec-")  # its own child group, seen through the cgroup namespace
    assert inside["namespaces_joined"] == ["user", "cgroup", "ipc", "uts", "net", "pid", "mnt"]
    assert inside["start"] and inside["end"] and inside["delta"].startswith("0:00:")

    with open("/proc/%d/mountinfo" % init) as handle:
        assert mount_points(run.named("mounts")["stdout"]) == mount_points(handle.read())

    net = run.named("net only")["stdout_lines"]
    assert net[0] == os.uname().nodename
    entries = [line for line in net[1:] if not line.isdigit() and ": " not in line]
    assert sorted(entries) == sorted([".", ".."] + os.listdir("/"))
    digits = [line for line in net if line.isdigit()]
    assert int(digits[0]) == ns_inode(init, "net") and int(digits[1]) == ns_inode("self", "mnt")
    links = subprocess.run(["nsenter", "-t", str(init), "-n", "ip", "-o", "link"], stdout=subprocess.PIPE,
                           text=True, check=True).stdout.splitlines()
    assert [line for line in net if ": " in line] == links
    assert run.named("net only")["namespaces_joined"] == ["user", "net"]  # user always: privileges live there

    ident = run.named("io and identity")
    assert ident["stdout_lines"][:7] == ["hello", "FOO=bar baz", "/tmp", "1000", "1001", "1001 5 7",
                                         "CapEff:\t0000000000000000"]
    assert ident["stderr"] == "err" and ident["stderr_lines"] == ["err"]

    failed = run.named("non-zero")
    assert failed.status == "ignored" and failed["rc"] == 3 and failed.changed
    assert failed["msg"] == "non-zero return code" and failed["stdout"] == "out"

    checked = run.named("check mode")
    assert checked.changed and "rc" not in checked.result and "not run" in checked["msg"]
    assert run.named("check mode left nothing")["stdout"] == "absent"

    timed = run.named("timeout")
    assert timed.status == "ignored" and timed["timed_out"] is True and timed["rc"] == -9
    assert "timed out after 1.5s" in timed["msg"] and "%s keeps running" % name in timed["msg"]
    assert timed["stdout"] == "started"
    assert not processes_named(b"sleep 301") and not processes_named(b"sleep 302")

    background = run.named("background")
    assert background["left_running"] == 1
    sleepers = processes_named(b"sleep 303")
    assert len(sleepers) == 1 and sleepers[0] in cgroup_procs(leaf_path(name))
    assert exec_groups(leaf_path(name)) == []
    assert alive(init)  # the container survived all of it

    # Output a container controls is bounded: the first output_limit bytes kept (1 MiB by default), the rest
    # counted and dropped, and the task says so.
    flood = run.named("flood")
    assert flood["rc"] == 0 and flood["stdout"] == "x" * (1 << 20) and flood["stdout_dropped"] == 52428800 - (1 << 20)
    assert flood["stdout_lines"] == ["x" * (1 << 20)] and flood["stderr"] == "tail" and flood["stderr_dropped"] == 0
    assert "stdout: the command wrote 52428800 bytes; the first 1048576 were kept (output_limit) and 51380224 " \
           "dropped" in flood.result.get("warnings", []), flood.result.get("warnings")
    on_stderr = run.named("flood stderr")
    assert on_stderr["stderr"] == "y" * 65536 and on_stderr["stderr_dropped"] == 200000 - 65536
    assert on_stderr["stdout"] == "" and on_stderr["stdout_dropped"] == 0
    unlimited = run.named("unlimited")
    assert len(unlimited["stdout"]) == 3000000 and unlimited["stdout_dropped"] == 0

    gone = play(ansible, [task("remove", "container_process", {"name": name, "state": "absent"})])
    assert gone.named("remove").changed and not alive(init) and not processes_named(b"sleep 303")


_UNCLEAR = ("NoneType", "Traceback", "object at 0x", "TypeError", "AttributeError", "KeyError", "ValueError",
            "IndexError", "[Errno")


def assert_clear(message):
    """A refusal a user can act on: no Python internals leak into it (a TypeError was once the whole message)."""
    leaked = [word for word in _UNCLEAR if word in message]
    assert not leaked, (leaked, message)
    assert 15 < len(message) < 600, message


# Refusals of a command that cannot start inside: (options, what the message says).
REFUSED_STARTS = {
    "user outside the map": ({"user": "70000"}, "uid 70000 gid 70000: one of these ids is outside the user "
                                                "namespace's id map"),
    "group outside the map": ({"groups": [70000]}, "groups [70000]: one of these ids is outside"),
    "a directory as command": ({"command": ["/tmp"]}, "/tmp"),
    "not a program": ({"command": ["/etc/passwd"]}, "/etc/passwd"),
}

# A refused working directory names the step, the path and why (it was once a TypeError from the report path).
REFUSED_CWDS = {
    "/proc/self/fd/3": "magic link",
    "/proc/1/cwd": "magic link",
    "/kbt-missing": "No such file or directory",
    "/etc/passwd": "not a directory",
    "/../..": "climbs above the container's root",
}


def test_exec_refuses_stopped_and_missing_containers_and_joins_any_pid(ansible, busybox_rootfs, containers):
    name = containers("kbt-exec-stop")
    target = subprocess.Popen(["unshare", "--fork", "--pid", "--uts", "--mount-proc", "--kill-child", "sh", "-c",
                               "hostname kbt-pid-target; exec sleep 86399"])
    try:
        wait_until(lambda: processes_named(b"sleep 86399 ", exact=True), 5)
        pid = processes_named(b"sleep 86399 ", exact=True)[0]
        free_pid = 4194000
        while os.path.exists("/proc/%d" % free_pid):
            free_pid -= 1
        tasks = [
            task("start", "container_process", container(name, busybox_rootfs)),
        ] + [dict(exec_task("cwd %s" % cwd, name, ["true"], cwd=cwd), ignore_errors=True) for cwd in REFUSED_CWDS] + [
            dict(exec_task(label, name, options.get("command", ["true"]),
                           **{k: v for k, v in options.items() if k != "command"}), ignore_errors=True)
            for label, (options, _fragment) in REFUSED_STARTS.items()] + [
            task("stop", "container_process", dict(container(name, busybox_rootfs), state="stopped")),
            dict(exec_task("stopped", name, ["true"]), ignore_errors=True),
            dict(exec_task("stopped in check mode", name, ["true"]), ignore_errors=True, check_mode=True),
            dict(exec_task("missing", "kbt-exec-nothere", ["true"]), ignore_errors=True),
            dict(task("no such pid", "container_exec", {"pid": free_pid, "command": ["true"]}), ignore_errors=True),
            dict(exec_task("bad command", name, []), ignore_errors=True),
            task("by pid", "container_exec", {"pid": pid, "command": ["sh", "-c", "hostname; echo $$; cat"],
                                              "stdin": "x"}),
            dict(task("by pid, not found", "container_exec", {"pid": pid, "command": ["kbt-no-such-command"]}),
                 ignore_errors=True),
            task("remove", "container_process", {"name": name, "state": "absent"}),
        ]
        run = play(ansible, tasks)
    finally:
        for leftover in processes_named(b"sleep 86399 ", exact=True):  # PID 1 of the unshare'd namespace
            os.kill(leftover, 9)
        target.kill()
        target.wait()
    for label in ("stopped", "stopped in check mode"):
        stopped = run.named(label)
        assert stopped.status == "ignored" and not stopped.changed, stopped.result
        assert stopped["msg"].startswith("container %s is not running (state: exited, exit code 7" % name)
    missing = run.named("missing")
    assert missing.status == "ignored" and missing["msg"].startswith("no container named kbt-exec-nothere")
    assert run.named("no such pid")["msg"] == "process %d does not exist" % free_pid
    assert "command" in run.named("bad command")["msg"]
    for cwd, fragment in REFUSED_CWDS.items():
        refused = run.named("cwd %s" % cwd)
        assert refused.status == "ignored" and not refused.changed, refused.result
        assert refused["msg"].startswith("could not start true: step 'cwd' failed: %s" % cwd), refused["msg"]
        assert refused["msg"].count(cwd) == 1 and "NoneType" not in refused["msg"], refused["msg"]
        assert_clear(refused["msg"])
    for label, (_options, fragment) in REFUSED_STARTS.items():
        refused = run.named(label)
        assert refused.status == "ignored" and not refused.changed, (label, refused.result)
        assert refused["msg"].startswith("could not start ") and fragment in refused["msg"], (label, refused["msg"])
        assert_clear(refused["msg"])
    for label in ("stopped", "stopped in check mode", "missing", "no such pid", "bad command", "by pid, not found"):
        assert_clear(run.named(label)["msg"])
        assert fragment in refused["msg"], (fragment, refused["msg"])
    by_pid = run.named("by pid")
    assert by_pid["stdout_lines"][0] == "kbt-pid-target" and by_pid["stdout_lines"][2] == "x"
    assert by_pid["stdout_lines"][1] != str(pid) and by_pid["namespaces_joined"] == ["uts", "pid", "mnt"]
    not_found = run.named("by pid, not found")
    assert not not_found.changed and "kbt-no-such-command" in not_found["msg"] and "exec" in not_found["msg"]
    assert not os.path.exists(leaf_path(name))


def exec_ended_by(ansible, name, end_it, sleeper):
    """Run ``sleep SLEEPER`` in container ``name`` (timeout 600 s), call ``end_it()`` once it runs, and return
    the exec's result: it must come back at once, not after its timeout."""
    outcome = {}

    def run_exec():
        outcome["result"] = ansible.module("container_exec", {"name": name, "command": ["sleep", sleeper],
                                                              "timeout": 600})
    worker = threading.Thread(target=run_exec)
    worker.start()
    try:
        assert wait_until(lambda: processes_named(b"sleep " + sleeper.encode()), 120), "the exec never started"
        began = time.monotonic()
        end_it()
        worker.join(180)
        assert not worker.is_alive(), "the exec is still waiting after its container exited"
        assert time.monotonic() - began < 120, "the exec waited far longer than the exit"
        return outcome["result"]
    finally:
        worker.join(300)


def test_an_exec_into_a_container_that_exits_mid_exec_returns(ansible, busybox_rootfs, containers):
    """The container's init dies while a command runs inside: the kernel ends its PID namespace, so the
    command dies too, and the exec returns at once with what it knows (never waits for its timeout)."""
    name = containers("kbt-exec-exit")
    init = ansible.module("container_process", container(name, busybox_rootfs))["pid"]
    result = exec_ended_by(ansible, name, lambda: os.kill(init, 9), "301")
    assert result.failed and result["rc"] == -9 and result["timed_out"] is False, result.result
    assert not processes_named(b"sleep 301") and exec_groups(leaf_path(name)) == []
    assert ansible.module("container_process", {"name": name, "state": "absent"}).changed


def test_an_exec_whose_container_group_is_killed_reports_sigkill(ansible, busybox_rootfs, containers):
    """What the supervisor does when a container's init is gone: cgroup.kill on the container's leaf.  The
    exec's own joiner is in that subtree and dies with the command, before it can report the command's status;
    the exec still reports the kill (rc -9), not an unknown rc."""
    name = containers("kbt-exec-groupkill")
    ansible.module("container_process", container(name, busybox_rootfs))
    leaf = leaf_path(name)

    def kill_the_leaf():
        with open(os.path.join(leaf, "cgroup.kill"), "w") as handle:
            handle.write("1")
    result = exec_ended_by(ansible, name, kill_the_leaf, "303")
    assert result.failed and result["rc"] == -9 and result["timed_out"] is False, result.result
    assert result["msg"] == "non-zero return code", result.result
    assert not processes_named(b"sleep 303") and exec_groups(leaf) == []
    assert ansible.module("container_process", {"name": name, "state": "absent"}).changed


# The CVE-2019-5736 check.  PID 1 of the container is this script, run by the host's Python (bound read-only
# from /usr): it attacks every process of its PID namespace but itself, repeatedly, and records the first result
# per (pid, name): opening /proc/PID/exe for reading and for writing, and PTRACE_ATTACH.
ATTACKER = r"""
import ctypes, errno, json, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_ATTACH, PTRACE_DETACH, WALL = 16, 17, 0x40000000
seen = set()
log = open("/tmp/attack.jsonl", "a", buffering=1)
def attempt(func):
    try:
        func()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
def exe(pid, flags):
    os.close(os.open("/proc/%d/exe" % pid, flags))
def ptrace(pid):
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) != 0:
        raise OSError(ctypes.get_errno(), "ptrace")
    while True:  # wait for the attach stop, then let go: a tracee left stopped would hang its exec
        _pid, status = os.waitpid(pid, WALL)
        if os.WIFSTOPPED(status):
            libc.ptrace(PTRACE_DETACH, pid, None, None)
            os.kill(pid, 18)  # SIGCONT: a stop that became a group stop outlives the detach
            return
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            return
def comm(pid):
    try:
        return open("/proc/%d/comm" % pid).read().strip()
    except OSError:
        return None
print("attacker ready", flush=True)
while True:
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, os.getpid()):
            continue
        pid = int(entry)
        name = comm(pid)
        if name is None or (pid, name) in seen or not (name.startswith("python") or name == "sleep"):
            continue
        seen.add((pid, name))
        result = {"pid": pid, "name": name, "read": attempt(lambda: exe(pid, os.O_RDONLY)),
                  "write": attempt(lambda: exe(pid, os.O_WRONLY)), "ptrace": attempt(lambda: ptrace(pid))}
        result["name_after"] = comm(pid)  # the same program all along, or it exec'd meanwhile
        log.write(json.dumps(result) + "\n")
    time.sleep(0.01)
"""


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture
def attack_rootfs(tmp_path, cgroup_test_parent):
    root = build_busybox_rootfs(str(tmp_path / "rootfs"))
    os.chmod(str(tmp_path), 0o755)
    os.makedirs(os.path.join(root, "usr"), exist_ok=True)
    for name in ("lib", "lib64"):  # merged /usr: /lib -> usr/lib, as on the host
        if os.path.islink("/" + name):
            os.symlink(os.readlink("/" + name), os.path.join(root, name))
    with open(os.path.join(root, "attack.py"), "w") as handle:
        handle.write(ATTACKER)
    return root


@pytest.mark.parametrize("sys_ptrace", [False, True], ids=["default-caps", "cap-sys-ptrace-added"])
def test_the_joining_process_cannot_be_opened_or_ptraced_from_inside(ansible, attack_rootfs, containers, sys_ptrace):
    """Root inside (seccomp off, so that only the kernel's ptrace rules decide) attacks the joining process while
    it holds inside the container (after setns, chroot and chdir), still fully privileged and still the host's
    Python, before it drops to the container's credentials.  Opening /proc/<joiner>/exe and PTRACE_ATTACH must
    fail with CAP_SYS_PTRACE dropped (the default) and also with it added.  With it added, only the
    non-dumpable flag stands in the way: the attacker passes the uid rule through CAP_SYS_PTRACE in the
    joiner's (now the container's) user namespace, but a non-dumpable process needs CAP_SYS_PTRACE in the
    user namespace its memory belongs to, the host's, where the container has none.  (Without a user
    namespace, a container given CAP_SYS_PTRACE holds it on the host and could attach: don't do that.)  A
    dumpable process with the container's credentials (a command exec'd earlier) is open to the same
    attacks: the control."""
    name = containers("kbt-dump-%s" % ("ptrace" if sys_ptrace else "default"))
    interpreter = os.path.realpath(ansible.python)
    before = {path: sha256(path) for path in sorted({interpreter, os.path.realpath(sys.executable)})}
    options = container(name, attack_rootfs, command=["/usr/bin/python3", "-u", "/attack.py"], seccomp="unconfined",
                        mounts=[{"source": "/usr", "destination": "/usr", "readonly": True}])
    if sys_ptrace:
        options["cap_add"] = ["SYS_PTRACE"]
    tasks = [
        task("start", "container_process", options),
        exec_task("control", name, ["sh", "-c", "sleep 60 >/dev/null 2>&1 &"]),
        dict(exec_task("joined while attacked", name, ["cat", "/etc/hostname"], timeout=60),
             environment={"KERNELBOX_TEST_EXEC_HOLD": "2"}),
        exec_task("results", name, ["cat", "/tmp/attack.jsonl"], timeout=60),
        task("remove", "container_process", {"name": name, "state": "absent"}),
    ]
    run = play(ansible, tasks)
    assert run.named("joined while attacked")["stdout"] == name  # the command ran after the attack
    results = [json.loads(line) for line in run.named("results")["stdout_lines"]]
    joiner = [r for r in results if r["name"].startswith("python") and r["name_after"] == r["name"]]
    control = [r for r in results if r["name"] == "sleep" == r["name_after"]]
    assert joiner, "the attacker never saw the joining process: %s" % results
    for attempt in joiner:
        assert (attempt["read"], attempt["write"], attempt["ptrace"]) == ("EACCES", "EACCES", "EPERM"), attempt
    # Writing is refused for the control as for the joiner by plain file permissions (the binaries belong to ids
    # the container does not map); what the non-dumpable flag adds is that /proc/PID/exe cannot even be opened.
    assert control and control[0]["read"] == "ok" and control[0]["ptrace"] == "ok", control
    assert {path: sha256(path) for path in before} == before
