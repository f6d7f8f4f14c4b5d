# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The roles, through molecule: prepare, converge, idempotence (a second converge with changed=0), verify, cleanup.

molecule runs here, inside tests/sandbox, against localhost with the collection installed from its tarball;
the leak check afterwards proves the cleanup scenario (the roles with state absent) removed everything.
"""

import os
import subprocess

from harness.ansible_runner import REPO, collections_path, venv_bin


def test_molecule_container_scenario(tmp_path, cgroup_test_parent):  # the parent exists before the leak check
    env = dict(os.environ, KB_COLLECTIONS_PATH=collections_path(), KB_TARGET_PYTHON=venv_bin("python"),
               ANSIBLE_NOCOLOR="1", NO_COLOR="1", MOLECULE_NO_LOG="false",
               # A fresh state.yml every run: a stale "prepared: true" from an aborted run would skip prepare.
               MOLECULE_EPHEMERAL_DIRECTORY=str(tmp_path / "molecule"),
               PATH=os.path.dirname(venv_bin("python")) + ":" + os.environ["PATH"])
    proc = subprocess.run([venv_bin("molecule"), "test", "-s", "container"], cwd=os.path.join(REPO, "extensions"),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1500,
                          check=False)
    output = proc.stdout
    assert proc.returncode == 0, output[-6000:]
    # molecule's idempotence step re-runs converge and fails on any changed task; make sure it ran.
    assert "container > idempotence: Executed: Successful" in output, output[-3000:]
    assert "container > verify: Executed: Successful" in output, output[-3000:]
