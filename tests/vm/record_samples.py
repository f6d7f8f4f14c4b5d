# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Record real cgroup v2 interface files for the unit tests (tests/unit/data/cgroup_vm/).

Run it in the VM:  KB_VM_KEEP=1 tests/vm/run --script tests/vm/record_samples.py
then copy <results>/samples/* into tests/unit/data/cgroup_vm/.  It drives the
kernel directly (no kernelbox code), so the samples are independent of the
code they test: an OOM kill, fork refusals, CPU throttling, throttled direct
writes to a loop device, and the files that show them.
"""

import os
import subprocess
import sys
import time

ROOT = "/sys/fs/cgroup"
GROUP = os.path.join(ROOT, "kbrec")
OUT = os.path.join(os.environ["KB_VM_RESULTS"], "samples")


def write(path, value):
    with open(path, "w") as handle:
        handle.write(value)


def save(name, text):
    with open(os.path.join(OUT, name), "w") as handle:
        handle.write(text)


def read(path):
    with open(path) as handle:
        return handle.read()


def run_in_group(code, timeout=60):
    proc = subprocess.Popen([sys.executable, "-c", "import sys\nsys.stdin.readline()\n" + code],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    write(os.path.join(GROUP, "cgroup.procs"), str(proc.pid))
    try:
        return proc.communicate("go\n", timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def main():
    os.makedirs(OUT, exist_ok=True)
    save("mountinfo_pure_v2.txt", read("/proc/self/mountinfo"))
    save("root_cgroup.controllers", read(os.path.join(ROOT, "cgroup.controllers")))
    write(os.path.join(ROOT, "cgroup.subtree_control"), "+cpu +cpuset +io +memory +pids")
    os.makedirs(GROUP, exist_ok=True)
    subprocess.run(["modprobe", "loop"], check=False)  # Debian builds loop as a module
    backing = "/run/kb-rec.img"
    with open(backing, "wb") as handle:
        handle.truncate(16 << 20)
    loop = subprocess.run(["losetup", "--find", "--show", backing], stdout=subprocess.PIPE, text=True,
                          check=True).stdout.strip()
    try:
        major_minor = "%d:%d" % (os.major(os.stat(loop).st_rdev), os.minor(os.stat(loop).st_rdev))
        write(os.path.join(GROUP, "memory.max"), "1000000")
        write(os.path.join(GROUP, "memory.high"), "max")
        write(os.path.join(GROUP, "memory.swap.max"), "0")
        write(os.path.join(GROUP, "memory.max"), "32M")
        write(os.path.join(GROUP, "cpu.max"), "20000 100000")
        write(os.path.join(GROUP, "cpuset.cpus"), "1,0")
        write(os.path.join(GROUP, "pids.max"), "3")
        write(os.path.join(GROUP, "io.max"), "%s wbps=1048576 riops=1000" % major_minor)
        run_in_group("chunks = [b'x' * (1 << 20) for _ in range(128)]\n")
        run_in_group("import os, time\nkids = []\nfor _ in range(5):\n    try:\n        pid = os.fork()\n"
                     "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(1)\n"
                     "        os._exit(0)\n    kids.append(pid)\nfor pid in kids:\n    os.waitpid(pid, 0)\n")
        run_in_group("import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end:\n    pass\n")
        run_in_group("import mmap, os\nfd = os.open(%r, os.O_WRONLY | os.O_DIRECT)\nb = mmap.mmap(-1, 65536)\n"
                     "for _ in range(24):\n    os.write(fd, b)\n" % loop)
        time.sleep(0.2)
        for name in ("memory.events", "memory.events.local", "memory.max", "memory.high", "memory.swap.max",
                     "memory.peak", "memory.current", "memory.pressure", "cpu.stat", "cpu.max", "cpu.pressure",
                     "cpuset.cpus", "cpuset.cpus.effective", "cpuset.mems.effective", "pids.events", "pids.max", "pids.current",
                     "io.max", "io.stat", "io.pressure", "cgroup.events", "cgroup.controllers"):
            save(name, read(os.path.join(GROUP, name)))
        save("loop_device", "%s %s\n" % (loop, major_minor))
    finally:
        subprocess.run(["losetup", "--detach", loop], check=False)
        os.unlink(backing)
        for _attempt in range(50):
            try:
                os.rmdir(GROUP)
                break
            except OSError:
                time.sleep(0.1)
    print("recorded %d files into %s" % (len(os.listdir(OUT)), OUT))


if __name__ == "__main__":
    main()
