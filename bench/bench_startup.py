# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Module start-up: what each module costs before it does any work, as Ansible ships and runs it.

For every module of the collection, and ``ansible.builtin.ping`` as the floor:

* the AnsiballZ payload Ansible builds (its own recursive module_utils finder, run through
  ``ansible localhost -m MODULE --check`` with ANSIBLE_KEEP_REMOTE_FILES): zip size, files in it,
  and how much of it is ours;
* the import cost from that zip in a fresh interpreter, the way the target runs it (a zip import
  compiles every imported file from source, every run): ``ansible.module_utils.basic`` first (every
  module pays it), then the module itself; median of KB_BENCH_ROUNDS (default 15) fresh processes, for
  the venv's and Debian's Python, with how many of our module_utils files the import executed.  The
  module's import over basic's is the figure that survives a busy machine: every module pays basic.

Lazy imports do not shrink the payload (Ansible's finder follows imports anywhere in a file) but they
do shrink the import: only executed imports are compiled.  Runs inside tests/sandbox (bench/run).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile

from common import REPO, table  # noqa: I100  (bench/ is the script's directory)

sys.path.insert(0, os.path.join(REPO, "tests"))
from harness.ansible_runner import collections_path, venv_bin  # noqa: E402

ROUNDS = int(os.environ.get("KB_BENCH_ROUNDS", "15"))
PYTHONS = (("venv", venv_bin("python")), ("distro", "/usr/bin/python3"))
# Arguments that pass the argument spec; --check keeps every module from changing anything.
MODULES = {
    "ansible.builtin.ping": {},
    "netns": {"name": "kbt-startup"},
    "veth": {"name": "kbt-startuph", "peer": "kbt-startupp"},
    "bridge": {"name": "kbt-startupb"},
    "overlay_rootfs": {"lower": ["/usr"], "upper": "/var/lib/kbt-startup/u", "work": "/var/lib/kbt-startup/w",
                       "merged": "/var/lib/kbt-startup/m"},
    "image_layers": {"src": "/var/lib/kbt-startup/none.tar"},
    "container_process": {"name": "kbt-startup", "rootfs": "/var/lib/kbt-startup", "command": ["/bin/true"]},
    "container": {"name": "kbt-startup", "rootfs": "/var/lib/kbt-startup", "command": ["/bin/true"]},
    "cgroup_v2": {"name": "kbt-startup"},
    "container_exec": {"name": "kbt-startup", "command": ["true"]},
    "container_info": {"name": []},
}

IMPORT = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
start = time.perf_counter()
import ansible.module_utils.basic
basic = time.perf_counter()
__import__(sys.argv[2])
done = time.perf_counter()
ours = [m for m in sys.modules if m.startswith("ansible_collections.kernelbox.containers.plugins.module_utils.")
        and not m.endswith("__init__") and sys.modules[m].__spec__ and not sys.modules[m].__spec__.submodule_search_locations]
print("%f %f %d" % (basic - start, done - basic, len(ours)))
"""


def payload(module: str, args: dict, keep: str) -> bytes:
    """The zip Ansible builds for ``module`` (kept on 'disk' by ANSIBLE_KEEP_REMOTE_FILES)."""
    fqcn = module if "." in module else "kernelbox.containers." + module
    shutil.rmtree(keep, ignore_errors=True)
    os.makedirs(keep)
    env = dict(os.environ, ANSIBLE_KEEP_REMOTE_FILES="1", ANSIBLE_REMOTE_TMP=keep,
               ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0")
    argv = [venv_bin("ansible"), "localhost", "-i", "localhost,", "-c", "local", "--check",
            "-e", "ansible_python_interpreter=/usr/bin/python3", "-m", fqcn]
    if args:
        argv += ["-a", json.dumps(args)]
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    for dirpath, _dirs, files in os.walk(keep):
        for name in files:
            if name.startswith("AnsiballZ_"):
                with open(os.path.join(dirpath, name)) as handle:
                    source = handle.read()
                call = source[source.rindex("_ansiballz_main("):]
                match = re.search(r"^zip_data='([A-Za-z0-9+/=]*)',$", call, re.M)
                if match:
                    return base64.b64decode(match.group(1))
    raise RuntimeError("no AnsiballZ payload for %s" % module)


def module_fqn(zip_bytes: bytes, module: str) -> str:
    names = zipfile.ZipFile(io.BytesIO(zip_bytes)).namelist()
    leaf = module.rsplit(".", 1)[-1] + ".py"
    [path] = [name for name in names if name.endswith("/modules/" + leaf)]
    return path[:-3].replace("/", ".")


def main() -> int:
    if os.environ.get("KB_SANDBOX") != "1":
        print("bench_startup: run it through bench/run (inside tests/sandbox)", file=sys.stderr)
        return 2
    os.makedirs("/var/lib/kbt-startup", exist_ok=True)
    work = tempfile.mkdtemp(prefix="kbt-startup-", dir="/var/lib")
    rows = []
    try:
        for module, args in MODULES.items():
            path = os.path.join(collections_path(), "ansible_collections", "kernelbox", "containers", "plugins",
                                "modules", module + ".py")
            if "." not in module and not os.path.exists(path):
                continue  # a module this checkout does not have yet
            data = payload(module, args, os.path.join(work, "keep"))
            archive = zipfile.ZipFile(io.BytesIO(data))
            ours = [info for info in archive.infolist() if info.filename.startswith("ansible_collections/kernelbox/")]
            zpath = os.path.join(work, module + ".zip")
            with open(zpath, "wb") as handle:
                handle.write(data)
            row = [module, len(data) / 1024.0, "%d (%d ours)" % (len(archive.infolist()), len(ours)),
                   sum(info.file_size for info in ours) / 1024.0]
            for _label, python in PYTHONS:
                basic, own, count = [], [], 0
                for _round in range(ROUNDS):
                    out = subprocess.run([python, "-c", IMPORT, zpath, module_fqn(data, module)],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True)
                    first, second, count = out.stdout.split()
                    basic.append(float(first) * 1000.0)
                    own.append(float(second) * 1000.0)
                row += [statistics.median(basic), statistics.median(own),
                        statistics.median(own) / statistics.median(basic), int(count)]
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree("/var/lib/kbt-startup", ignore_errors=True)
    header = ["module", "payload KiB (zip)", "files", "our source KiB"]
    for label, _python in PYTHONS:
        header += ["%s: basic ms" % label, "%s: module import ms" % label, "%s: module / basic" % label,
                   "%s: our files run" % label]
    table("module start-up from its AnsiballZ zip (median of %d fresh processes; load average %.1f)"
          % (ROUNDS, os.getloadavg()[0]), rows, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
