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

import pytest

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


# No test may hang: each gets a timeout (pytest-timeout) unless it carries its own @pytest.mark.timeout.  Sized for
# a machine under a 4x load (2 cores, two CPU hogs beside the suite); the VM stage runs under TCG, 10x slower.
# On expiry, pytest-timeout (signal method) prints every thread's stack and fails the test; fixtures tear down.
TIMEOUTS = {"unit": 120, "integration": 1200, "vm": 2400}


def pytest_configure(config):
    if not config.pluginmanager.hasplugin("timeout"):
        raise pytest.UsageError("pytest-timeout is missing: every test needs a timeout (make install puts it in .venv)")


def pytest_collection_modifyitems(items):
    tests = os.path.join(REPO, "tests")
    for item in items:
        if item.get_closest_marker("timeout") is not None:
            continue
        stage = os.path.relpath(str(item.fspath), tests).split(os.sep, maxsplit=1)[0]
        if stage in TIMEOUTS:
            item.add_marker(pytest.mark.timeout(TIMEOUTS[stage], method="signal"))
