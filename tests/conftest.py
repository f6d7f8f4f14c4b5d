# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make ``ansible_collections.kernelbox.containers`` importable from this checkout.

Unit tests import module_utils directly; integration tests go through Ansible
and the installed tarball instead (see harness/ansible_runner.py).
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV_ROOT = os.path.join(REPO, ".build", "dev")


def _link_checkout() -> None:
    link = os.path.join(DEV_ROOT, "ansible_collections", "kernelbox", "containers")
    if os.path.realpath(link) != REPO:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(REPO, link)
    if DEV_ROOT not in sys.path:
        sys.path.insert(0, DEV_ROOT)
    sys.path.insert(0, os.path.join(REPO, "tests"))


_link_checkout()
