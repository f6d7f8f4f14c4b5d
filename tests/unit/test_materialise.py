# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The supervisor's code copy is complete: it imports from itself alone, in an isolated interpreter."""
import os
import subprocess
import sys

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import materialise, supervisor
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state

CHECK = r'''
import os, sys
here = os.path.dirname(os.path.abspath(sys.argv[1]))
sys.path.insert(0, here)
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import supervisor, client, engine
ours = [m for m in sys.modules.values() if getattr(m, "__name__", "").startswith("ansible_collections")]
outside = [m.__name__ for m in ours if getattr(m, "__file__", None) and not m.__file__.startswith(here)]
assert not outside, outside
assert "ansible" not in sys.modules and "ansible.module_utils" not in sys.modules, "imports Ansible"
print(len(ours))
'''


def test_copy_is_self_contained(tmp_path):
    layout = state.Layout(str(tmp_path / "run"), str(tmp_path / "lib"))
    code = materialise.materialise(layout)
    assert os.path.basename(code) == os.readlink(os.path.join(materialise.runtime_root(layout), "current"))
    entry = os.path.join(code, supervisor.ENTRY_SCRIPT)
    proc = subprocess.run([sys.executable, "-I", "-c", CHECK, entry], capture_output=True, text=True, cwd="/", check=False)
    assert proc.returncode == 0, proc.stderr
    usage = subprocess.run([sys.executable, "-I", entry], capture_output=True, text=True, cwd="/", check=False)
    assert usage.returncode == 2 and "usage" in usage.stderr
    assert materialise.materialise(layout) == code  # same code, same directory: nothing rewritten


def test_garbage_collection_keeps_current_and_in_use(tmp_path):
    layout = state.Layout(str(tmp_path / "run"), str(tmp_path / "lib"))
    code = materialise.materialise(layout)
    root = materialise.runtime_root(layout)
    for old in ("aaaa", "bbbb"):
        os.makedirs(os.path.join(root, old))
    removed = materialise.collect_garbage([os.path.join(root, "bbbb")], layout)
    assert removed == [os.path.join(root, "aaaa")]
    assert sorted(os.listdir(root)) == sorted(["bbbb", "current", os.path.basename(code)])


def test_listed_closure_is_what_the_imports_reach():
    """CLOSURE saves every run from computing the supervisor's imports; it must be exactly what they reach."""
    computed = {name[len(materialise.PACKAGE) + 1:] for name in materialise.closure()}
    listed = set(materialise.CLOSURE)
    assert computed == listed, (
        "update CLOSURE in _runtime/supervise/materialise.py: add %s, remove %s"
        % (sorted(computed - listed) or "nothing", sorted(listed - computed) or "nothing"))
    assert materialise.listed_sources() == materialise.closure()
