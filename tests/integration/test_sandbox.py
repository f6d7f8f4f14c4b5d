# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/sandbox itself: a checkout, virtualenv and collection tree under /tmp stay visible inside it.

The sandbox mounts fresh tmpfs over /run, /var/lib and /tmp; a clone under /tmp used to vanish behind it
("FileNotFoundError: .../.venv/bin/pytest").  Here a copy of the sandbox scripts, a small virtualenv and a
collection tree all live under /tmp (this sandbox's own tmpfs), and a nested sandbox started from there must
see all three, and nothing else of the /tmp below it.
"""

import os
import shutil
import subprocess
import sys

from harness.ansible_runner import REPO

CHECK = """
import os, sys
clone, venv, collections, hidden = sys.argv[1:5]
seen = {"checkout": os.path.isfile(os.path.join(clone, "tests", "harness", "sandbox_init.py")),
        "venv": os.path.isfile(os.path.join(venv, "pyvenv.cfg")),
        "collections": os.path.isfile(os.path.join(collections, "marker")),
        "cwd": os.getcwd() == clone,
        "fresh /tmp": not os.path.exists(hidden)}
print(seen)
sys.exit(0 if all(seen.values()) else 1)
"""


def test_a_checkout_venv_and_collection_tree_under_tmp_stay_visible(tmp_path, cgroup_test_parent):
    top = str(tmp_path)
    assert top.startswith("/tmp/"), top
    clone, venv, collections = top + "/clone", top + "/venv", top + "/built/collections"
    os.makedirs(clone + "/tests/harness")
    shutil.copy2(os.path.join(REPO, "tests", "sandbox"), clone + "/tests/sandbox")
    shutil.copy2(os.path.join(REPO, "tests", "harness", "sandbox_init.py"), clone + "/tests/harness/sandbox_init.py")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", venv], check=True)
    os.makedirs(collections)
    open(collections + "/marker", "w").close()
    hidden = top + "/not-kept"
    open(hidden, "w").close()
    env = dict(os.environ, KB_VENV=venv, KB_COLLECTIONS_PATH=collections,
               KB_TEST_CGROUP_PARENT=cgroup_test_parent + "/kbt-nested-sandbox")
    proc = subprocess.run([clone + "/tests/sandbox", "--python", venv + "/bin/python", venv + "/bin/python", "-c",
                           CHECK, clone, venv, collections, hidden],
                          cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout
