# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What importing a module costs: heavy libraries stay out of the paths that do not use them.

On the target every imported file is compiled from the AnsiballZ zip on every run, so an import the path does
not need is paid on every task (docs/performance.md).  Each case imports the module in a fresh interpreter and
lists what it brought in.
"""
import json
import subprocess
import sys

import pytest

from conftest import DEV_ROOT

MU = "ansible_collections.kernelbox.containers.plugins.module_utils."
MODULES = "ansible_collections.kernelbox.containers.plugins.modules."
REGISTRY_CLIENT = ["ansible.module_utils.urls", "http.client", "ssl", MU + "_kernel.registry.client",
                   MU + "_kernel.registry.pull"]

PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
__import__(sys.argv[2])
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def imported_by(name):
    proc = subprocess.run([sys.executable, "-c", PROBE, DEV_ROOT, name], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout))


@pytest.mark.parametrize("name, never", [
    # rtnetlink is spoken directly: no netlink library on any network path
    (MODULES + "netns", ["pyroute2"]),
    (MODULES + "veth", ["pyroute2"]),
    (MODULES + "bridge", ["pyroute2"]),
    # psutil only where processes are listed (a busy mount), not to load the module
    (MODULES + "overlay_rootfs", ["psutil"]),
    # the container module loads the nftables code only for a container with ports, when it runs
    (MU + "_glue.container", [MU + "_kernel.nat", MU + "_sys.nftables", MU + "_sys.conntrack"]),
    # an image from a file never loads the registry client
    (MU + "_glue.image_layers", REGISTRY_CLIENT),
    (MU + "_glue.image_pull", REGISTRY_CLIENT),
])
def test_heavy_imports_stay_off_paths_that_do_not_need_them(name, never):
    loaded = imported_by(name)
    assert name in loaded
    assert not [heavy for heavy in never if heavy in loaded or any(m.startswith(heavy + ".") for m in loaded)]


def test_the_pull_policies_are_the_pull_librarys():
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue import image_pull
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import pull
    assert image_pull.PULL_POLICIES == pull.POLICIES
