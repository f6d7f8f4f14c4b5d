# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: a durable copy of the runtime code for the supervisor and the CLI.

A module runs from an AnsiballZ payload that Ansible deletes when the module
exits; the supervisor outlives it, so it must never import from there.  The
module copies the code of every entry point in ``ENTRIES`` and everything it
imports (found by walking the import statements) to::

    /var/lib/kernelbox/runtime/<digest>/kernelbox-supervisor.py     the supervisor
    /var/lib/kernelbox/runtime/<digest>/kernelbox-connection.py     the connection plugin's helper
    /var/lib/kernelbox/runtime/<digest>/kernelbox-runtime.py        the OCI runtime command line (kernelbox-runtime)
    /var/lib/kernelbox/runtime/<digest>/ansible_collections/kernelbox/containers/plugins/module_utils/...
    /var/lib/kernelbox/runtime/current -> <digest>

The connection plugin installs the same copy from the controller: it sends
this code as a zip and runs ``materialise()`` from it on the host, which
reads the same sources, hence writes the same digest (``current`` is left
alone: it is the supervisor's).

The directory name is the digest of the code, so a collection upgrade makes a
new directory beside the old one, and the running supervisor re-executes
into it.  The copy is built in a temporary directory and renamed into
place: it is complete or absent.  It is infrastructure, like an installed
package, and stays when no container does (boot start needs it).

Which modules make up the copy is listed in ``CLOSURE``; ``closure()``
computes the same set from the sources, and a unit test fails until the two
agree.  Computing it on every run meant importing (compiling) and parsing
38 modules, about half a second of every container start; reading their
sources from the payload and hashing them costs milliseconds.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import os
import pkgutil
import typing as t
from dataclasses import dataclass

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import supervisor
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state

PACKAGE = "ansible_collections.kernelbox.containers.plugins.module_utils"


def _bundled() -> None:  # pragma: no cover  (never called)
    """Names every entry point, so that Ansible's module_utils finder (which walks imports anywhere in a file)
    bundles it, and everything it imports, into every payload that uses this file.

    Never called: the copy reads their sources (``listed_sources``), it does not run them, and a module that
    imported them would compile the connection helper and the OCI command line on every container start.
    """
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import client  # noqa: F401  pylint: disable=unused-import
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.connect import helper  # noqa: F401  pylint: disable=unused-import
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import cli  # noqa: F401  pylint: disable=unused-import


CLI_SCRIPT = "kernelbox-runtime.py"  # what the oci_runtime module's wrapper runs


@dataclass(frozen=True)
class Entry:
    """An executable script in the copy: it runs ``main()`` of ``module``."""

    script: str
    module: str
    usage: str


ENTRIES = (
    Entry(supervisor.ENTRY_SCRIPT, PACKAGE + "._runtime.supervise.supervisor", "serve [--detach] | boot"),
    Entry("kernelbox-connection.py", PACKAGE + "._runtime.connect.helper", "< request > reply"),
    Entry(CLI_SCRIPT, PACKAGE + "._runtime.oci.cli", "create | start | run | state | kill | delete | exec | ..."),
)
ROOT_MODULES = tuple(entry.module for entry in ENTRIES) + (PACKAGE + "._runtime.supervise.client",)
# Every module of ours that ROOT_MODULES import, at any depth, relative to PACKAGE: what closure() finds.
CLOSURE = (
    "_kernel.cgroup",
    "_kernel.cgroup_devices",
    "_kernel.cgroup_limits",
    "_kernel.cgroup_tree",
    "_kernel.mounts",
    "_runtime.connect.helper",
    "_runtime.connect.protocol",
    "_runtime.connect.transfer",
    "_runtime.model.capabilities",
    "_runtime.model.cgroups_path",
    "_runtime.model.mountopts",
    "_runtime.model.resources",
    "_runtime.model.spec",
    "_runtime.model.spec_checks",
    "_runtime.oci.cli",
    "_runtime.oci.containers",
    "_runtime.oci.create",
    "_runtime.oci.documents",
    "_runtime.oci.execute",
    "_runtime.oci.store",
    "_runtime.oci.tty",
    "_runtime.process.confine",
    "_runtime.process.console",
    "_runtime.process.exec_request",
    "_runtime.process.execution",
    "_runtime.process.hooks",
    "_runtime.process.inroot",
    "_runtime.process.launch",
    "_runtime.process.launch_init",
    "_runtime.process.lsm",
    "_runtime.process.protect",
    "_runtime.process.rootfs",
    "_runtime.seccomp.bpf",
    "_runtime.seccomp.default",
    "_runtime.seccomp.profile",
    "_runtime.seccomp.syscall_table",
    "_runtime.state",
    "_runtime.supervise.client",
    "_runtime.supervise.engine",
    "_runtime.supervise.health",
    "_runtime.supervise.lifecycle",
    "_runtime.supervise.logs",
    "_runtime.supervise.materialise",
    "_runtime.supervise.restart",
    "_runtime.supervise.supervisor",
    "_runtime.supervise.systemd",
    "_sys.bpf",
    "_sys.errors",
    "_sys.forked",
    "_sys.libc",
    "_sys.netdev",
    "_sys.procfs",
    "_sys.procscan",
    "_sys.validate",
)

ENTRY_TEMPLATE = '''#!/usr/bin/python3
# kernelbox entry point, written by kernelbox.containers; do not edit.
# Usage: %(script)s %(usage)s
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from %(module)s import main  # noqa: E402

sys.exit(main())
'''


def runtime_root(layout: state.Layout = state.DEFAULT_LAYOUT) -> str:
    return os.path.join(layout.lib_root, "runtime")


def _loaded_source(name: str) -> str:
    module = importlib.import_module(name)
    loader = getattr(module, "__loader__", None)
    source = loader.get_source(name) if loader is not None and hasattr(loader, "get_source") else None
    if source is None:
        raise ImportError("no source available for %s" % name)
    return source.decode("utf-8") if isinstance(source, bytes) else source  # Ansible's collection loader: bytes


def _source(name: str) -> str:
    """A module's source, read through its package's loader (the payload's zip, a directory) without running it.

    Not ``find_spec``: Python's zipimport compiles a module to answer it.  A loader that cannot serve the
    file (mitogen's importer serves what it has loaded) gets the module imported and asked for its source.
    """
    package, _dot, leaf = name.rpartition(".")
    try:
        data = pkgutil.get_data(package, leaf + ".py")
    except (OSError, ImportError, ValueError, AttributeError, NotImplementedError):
        data = None
    return data.decode("utf-8") if data is not None else _loaded_source(name)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _imports(source: str) -> t.Set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE + "."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                (node.module + ".").startswith(PACKAGE + "."):
            for alias in node.names:
                candidate = node.module + "." + alias.name
                found.add(candidate if _is_module(candidate) else node.module)
    return found


def closure(roots: t.Iterable[str] = ROOT_MODULES) -> t.Dict[str, str]:
    """module name -> source for the roots and everything of ours they import, at any depth."""
    sources: t.Dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in sources or name == PACKAGE:
            continue
        sources[name] = _loaded_source(name)
        todo.extend(sorted(_imports(sources[name]) - set(sources)))
    return sources


def _files(sources: t.Mapping[str, str]) -> t.Dict[str, bytes]:
    """relative path -> content, with an empty __init__.py for every package level."""
    files: t.Dict[str, bytes] = {}
    for name, source in sources.items():
        parts = name.split(".")
        for depth in range(1, len(parts)):
            files.setdefault(os.path.join(*parts[:depth], "__init__.py"), b"")
        files[os.path.join(*parts) + ".py"] = source.encode("utf-8")
    for entry in ENTRIES:
        files[entry.script] = (ENTRY_TEMPLATE % {"script": entry.script, "module": entry.module,
                                                 "usage": entry.usage}).encode()
    return files


def code_digest(files: t.Mapping[str, bytes]) -> str:
    hasher = hashlib.sha256()
    for path in sorted(files):
        hasher.update(path.encode() + b"\0" + files[path] + b"\0")
    return hasher.hexdigest()[:16]


def listed_sources() -> t.Dict[str, str]:
    """module name -> source for every module in CLOSURE, read without importing them."""
    return {PACKAGE + "." + name: _source(PACKAGE + "." + name) for name in CLOSURE}


def code_files() -> t.Dict[str, bytes]:
    """Every file of the copy: relative path -> content."""
    return _files(listed_sources())


def planned(layout: state.Layout = state.DEFAULT_LAYOUT) -> t.Tuple[str, t.Dict[str, bytes]]:
    """(the directory this code's copy has, its files), without writing anything."""
    files = code_files()
    return os.path.join(runtime_root(layout), code_digest(files)), files


def is_current(target: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> bool:
    """Whether ``target`` is complete and ``current`` points at it."""
    try:
        return os.readlink(os.path.join(runtime_root(layout), "current")) == os.path.basename(target) and \
            complete(target)
    except OSError:
        return False


def complete(directory: str) -> bool:
    """Whether ``directory`` holds a finished copy (it is renamed into place whole, with every entry)."""
    return all(os.path.isfile(os.path.join(directory, entry.script)) for entry in ENTRIES)


def materialise(layout: state.Layout = state.DEFAULT_LAYOUT, point_current: bool = True) -> str:
    """Write the copy if it is not there yet; return its directory (and point ``current`` at it)."""
    files = code_files()
    root = runtime_root(layout)
    target = os.path.join(root, code_digest(files))
    if not complete(target):
        os.makedirs(root, mode=0o755, exist_ok=True)
        temp = os.path.join(root, ".tmp-%d" % os.getpid())
        state.remove_tree(temp)
        for path, content in files.items():
            full = os.path.join(temp, path)
            os.makedirs(os.path.dirname(full), mode=0o755, exist_ok=True)
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
        try:
            os.rename(temp, target)
        except OSError:  # another run put the same code there first
            state.remove_tree(temp)
            if not complete(target):
                raise
        state.fsync_dir(root)
    if point_current:
        _point_current(root, os.path.basename(target))
    return target


def _point_current(root: str, name: str) -> None:
    link = os.path.join(root, "current")
    try:
        if os.readlink(link) == name:
            return
    except OSError:
        pass
    temp = os.path.join(root, ".current-%d" % os.getpid())
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass
    os.symlink(name, temp)
    os.rename(temp, link)


def collect_garbage(keep: t.Iterable[str], layout: state.Layout = state.DEFAULT_LAYOUT) -> t.List[str]:
    """Remove code copies other than ``keep`` (paths) and ``current``; returns what was removed."""
    root = runtime_root(layout)
    kept = {os.path.basename(os.path.normpath(path)) for path in keep if path}
    try:
        kept.add(os.readlink(os.path.join(root, "current")))
        entries = os.listdir(root)
    except OSError:
        return []
    removed = []
    for entry in entries:
        full = os.path.join(root, entry)
        if entry in kept or entry == "current" or entry.startswith(".") or not os.path.isdir(full):
            continue
        state.remove_tree(full)
        removed.append(full)
    return removed
