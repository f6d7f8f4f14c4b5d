# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: target-side dependency checks.

psutil is imported lazily by the libraries that use it, and libnftables (a C
library, loaded with ctypes) when first used, so ``ansible-test sanity --test
import`` passes without them.  A module calls ``require()`` first and, if a
library is missing, fails with Ansible's standard missing-library message
naming the distro package and the pip package.  ``require()`` only looks a
Python library up (``importlib.util.find_spec``): importing it is left to the
code path that uses it, so a run that does not need it never pays for the
import.  A C library is looked up by loading it, which costs no more.
"""

from __future__ import annotations

import importlib.util
import typing as t

from ansible.module_utils.basic import missing_required_lib

# First of ours (see flow.py): each file of ours compiled once when it comes from the module's zip.
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import zipload  # noqa: F401  pylint: disable=unused-import

# import name -> (distro package, pip requirement or None for a C library, url)
TARGET_LIBRARIES = {
    "pyroute2": ("python3-pyroute2", "pyroute2>=0.7.2", "https://pypi.org/project/pyroute2/"),
    "psutil": ("python3-psutil", "psutil>=5.9", "https://pypi.org/project/psutil/"),
    # Loaded with ctypes (_sys/nftables.py), so any Python can use it; there is nothing to pip install.
    "libnftables": ("libnftables1 (Debian, Ubuntu) or nftables (Fedora, RHEL)", None,
                    "https://netfilter.org/projects/nftables/"),
}


def _c_library_missing(name: str) -> t.Optional[str]:
    """Why the C library ``name`` cannot be loaded, or None when it can."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import nftables
    try:
        nftables.load_library()
    except nftables.NftUnavailable as exc:
        return "%s: %s" % (type(exc).__name__, exc)
    return None


def missing_libraries(names: t.Iterable[str]) -> t.List[t.Tuple[str, str]]:
    """[(name, reason)] for each library the target's Python cannot find (found ones are not imported)."""
    missing = []
    for name in names:
        if TARGET_LIBRARIES.get(name, ("", "", ""))[1] is None:
            reason = _c_library_missing(name)
            if reason:
                missing.append((name, reason))
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError) as exc:
            found, reason = False, "%s: %s" % (type(exc).__name__, exc)
        else:
            reason = "ModuleNotFoundError: No module named %r" % name
        if not found:
            missing.append((name, reason))
    return missing


def require(module: t.Any, *names: str) -> None:
    """Fail the module with missing_required_lib() if any of ``names`` is not importable."""
    for name, trace in missing_libraries(names):
        distro, pip_req, url = TARGET_LIBRARIES[name]
        if pip_req is None:
            reason = "by kernelbox.containers (loaded with ctypes); install the distro package %s" % distro
        else:
            reason = ("by kernelbox.containers; install the distro package %s (apt/dnf) or run "
                      "\"pip install '%s'\" for the target's Python" % (distro, pip_req))
        module.fail_json(msg=missing_required_lib(name, reason=reason, url=url), exception=trace)
