# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PID-side of tests/sandbox, already inside the new network and mount namespaces.

* mounts tmpfs on /run, /var/lib and /tmp (private mount namespace: the host never sees them,
  and nothing a killed module or test leaves in them outlives the run);
* binds back, over those tmpfs, what the run needs from below them: the checkout, the virtualenv,
  the installed collection tree and the current directory (a clone under /tmp works), plus any
  directory listed in $KB_SANDBOX_KEEP (colon-separated).  Each is held by an O_PATH fd before the
  tmpfs hides it and bound from that fd, so the bind is the very directory, whatever path it has;
* brings up lo in the sandbox network namespace;
* becomes a child subreaper, so every process a test leaves behind (daemons
  included) is re-parented here; after the command ends, any survivor is a
  leak: it is reported, killed by PID and reaped, and the exit status is 1;
* removes the run's cgroup test parent, reporting anything left inside it.

Every run's test parent is ``kbtest/<sandbox pid>``: one group, ``kbtest``, directly below the cgroup2
root holds the parents of all runs, so that two runs on one machine (or a run beside a benchmark) never
see each other's parent appear beside their own.  ``kbtest`` is removed when the last run leaves it.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
TEST_CGROUP_TOP = "kbtest"  # shared by every run's parent; see the docstring
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC = 2, 4, 4096, 16384
# Fresh, private, empty: what tests write to the machine's scratch and state directories stays in the sandbox.
SCRATCH = (("/run", b"mode=0755"), ("/var/lib", b"mode=0755"), ("/tmp", b"mode=1777"))


def main(argv):
    if not argv:
        print("usage: sandbox_init.py CMD [ARGS...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    try:
        _mount_scratch(libc, _paths_to_keep(argv))
    except OSError as exc:
        print("sandbox: %s" % exc, file=sys.stderr)
        return 2
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("sandbox: cannot become a subreaper", file=sys.stderr)
        return 2
    run_id = "%d" % os.getpid()
    env = dict(os.environ, KB_SANDBOX="1", KB_SANDBOX_PID=run_id,
               KB_TEST_CGROUP_PARENT=os.environ.get("KB_TEST_CGROUP_PARENT", "%s/%s" % (TEST_CGROUP_TOP, run_id)))
    root_controls = _cgroup_root_subtree_control()
    child = subprocess.Popen(argv, env=env)
    status = _wait_for(child)
    _reap_zombies()
    leaked = _reap_leftovers(child.pid)
    leaked_cgroups = _remove_cgroup_parent(env["KB_TEST_CGROUP_PARENT"])
    if leaked or leaked_cgroups:
        print("sandbox: LEAK: the test run left processes %s and cgroups %s behind"
              % (leaked, leaked_cgroups), file=sys.stderr)
        return status or 1
    if _cgroup_root_subtree_control() != root_controls:
        print("sandbox: LEAK: the run changed the cgroup2 root's cgroup.subtree_control from %r to %r, "
              "outside the test parent" % (root_controls, _cgroup_root_subtree_control()), file=sys.stderr)
        return status or 1
    return status


def _paths_to_keep(argv):
    """Directories the run needs that a scratch tmpfs would hide: the checkout, the virtualenv, the collection
    tree, the current directory, the command, and $KB_SANDBOX_KEEP; outermost only, each as a real path."""
    here = os.path.dirname(os.path.abspath(__file__))
    wanted = [os.path.dirname(os.path.dirname(here)), sys.prefix, os.getcwd()]
    wanted += [os.environ[name] for name in ("KB_VENV", "KB_COLLECTIONS_PATH") if os.environ.get(name)]
    if os.sep in argv[0]:
        wanted.append(os.path.dirname(os.path.abspath(argv[0])))
    wanted += [path for path in os.environ.get("KB_SANDBOX_KEEP", "").split(":") if path]
    real = sorted({os.path.realpath(path) for path in wanted if os.path.isdir(path)})
    return [path for path in real if not any(path.startswith(outer + "/") for outer in real if outer != path)]


def _mount_scratch(libc, keep):
    """tmpfs on each scratch directory, then every kept directory below it bound back at its own path."""
    cwd = os.getcwd()
    held = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            for path in keep if any(path.startswith(top + "/") for top, _mode in SCRATCH)]
    try:
        for target, mode in SCRATCH:
            if libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, mode) != 0:
                err = ctypes.get_errno()
                raise OSError(err, "cannot mount tmpfs on %s: %s" % (target, os.strerror(err)))
        for path, fd in held:
            os.makedirs(path, exist_ok=True)
            if libc.mount(("/proc/self/fd/%d" % fd).encode(), path.encode(), None, MS_BIND | MS_REC, None) != 0:
                err = ctypes.get_errno()
                raise OSError(err, "cannot bind %s back over the scratch tmpfs: %s" % (path, os.strerror(err)))
    finally:
        for _path, fd in held:
            os.close(fd)
    if any(cwd == path or cwd.startswith(path + "/") for path, _fd in held):
        os.chdir(cwd)  # the bound directory, not the hidden one the process still stood in


def _wait_for(child):
    """Wait for the command, reaping re-parented orphans meanwhile, as a real init does.

    Daemons that exit during the run (the container supervisor exits when it
    has nothing left to supervise) must not linger as zombies and be taken
    for leaks at the end.
    """
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            continue
        except ChildProcessError:
            return child.wait()
        if pid == child.pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode


def _children():
    """PIDs whose parent is this process: after the command exits, these are leftovers."""
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == me:
            pids.append(int(entry))
    return pids


def _reap_leftovers(command_pid):
    leaked = []
    for _attempt in range(50):
        # Dead orphans (zombies re-parented here, e.g. children of processes a test killed) are not
        # leaks: collect them before looking for survivors.
        _reap_zombies()
        pids = [p for p in _children() if p != command_pid]
        if not pids:
            break
        for pid in pids:
            if pid not in leaked:
                leaked.append(pid)
                try:
                    with open("/proc/%d/cmdline" % pid, "rb") as handle:
                        cmd = handle.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    cmd = "?"
                print("sandbox: leftover process %d: %s" % (pid, cmd), file=sys.stderr)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
        _reap_zombies()
    _reap_zombies()
    return leaked


def _reap_zombies():
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _cgroup2_root():
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2":
                return fields[4]
    return None


def _cgroup_root_subtree_control():
    root = _cgroup2_root()
    if root is None:
        return None
    with open(os.path.join(root, "cgroup.subtree_control")) as handle:
        return handle.read().strip()


def _remove_cgroup_parent(name):
    root = _cgroup2_root()
    if root is None:
        return []
    top = os.path.join(root, name)
    if not os.path.isdir(top):
        return []
    try:
        return _remove_tree(root, top)
    finally:
        if name.startswith(TEST_CGROUP_TOP + "/"):
            try:  # the last run out removes the shared group; another run still inside keeps it
                os.rmdir(os.path.join(root, TEST_CGROUP_TOP))
            except OSError:
                pass


def _remove_tree(root, top):
    left = []
    for dirpath, _dirnames, _files in os.walk(top, topdown=False):
        if dirpath != top:
            left.append(os.path.relpath(dirpath, root))
        try:
            with open(os.path.join(dirpath, "cgroup.kill"), "w") as handle:
                handle.write("1")
        except OSError:
            pass
        for _attempt in range(50):
            try:
                os.rmdir(dirpath)
                break
            except OSError:
                time.sleep(0.1)
    return left


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
