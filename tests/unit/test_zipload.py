# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_sys.zipload: our modules from a zip are compiled once, and look exactly as zipimport makes them.

Each case runs in a fresh interpreter whose only copy of the collection is a zip laid out as an AnsiballZ
payload (the module_utils packages with their __init__.py files), and counts the calls to compile() per file.
"""
import json
import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

MU = "ansible_collections/kernelbox/containers/plugins/module_utils"
NAME = "ansible_collections.kernelbox.containers.plugins.module_utils._probe.leaf"

PROBE = r"""
import builtins, collections, json, pkgutil, sys
zip_path, install = sys.argv[1], sys.argv[2] == "yes"
sys.path.insert(0, zip_path)
compiled = collections.Counter()
real_compile = builtins.compile
def counting_compile(source, filename, *args, **kwargs):
    compiled[str(filename)] += 1
    return real_compile(source, filename, *args, **kwargs)
builtins.compile = counting_compile
if install:
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import zipload
import ansible_collections.kernelbox.containers.plugins.module_utils._probe.leaf as leaf
package = sys.modules["ansible_collections.kernelbox.containers.plugins.module_utils._probe"]
try:
    import ansible_collections.kernelbox.containers.plugins.module_utils._probe.missing
    missing = "imported"
except ModuleNotFoundError as exc:
    missing = exc.name
def view(module):
    spec = module.__spec__
    return {"file": module.__file__, "package": module.__package__, "path": getattr(module, "__path__", None),
            "cached": getattr(module, "__cached__", None), "loader": type(module.__loader__).__name__,
            "origin": spec.origin, "locations": spec.submodule_search_locations, "has_location": spec.has_location}
print(json.dumps({"compiled": {k: v for k, v in compiled.items() if "_probe" in k}, "leaf": view(leaf),
                  "package": view(package), "value": leaf.VALUE, "missing": missing,
                  "data": pkgutil.get_data(package.__name__, "data.txt").decode()}))
"""


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("zipload") / "payload.zip")
    with zipfile.ZipFile(path, "w") as archive:
        for package in ("ansible_collections", "ansible_collections/kernelbox", "ansible_collections/kernelbox/containers",
                        "ansible_collections/kernelbox/containers/plugins", MU, MU + "/_sys", MU + "/_probe"):
            archive.writestr(package + "/__init__.py", "")
        with open(os.path.join(REPO, "plugins", "module_utils", "_sys", "zipload.py")) as source:
            archive.writestr(MU + "/_sys/zipload.py", source.read())
        archive.writestr(MU + "/_probe/leaf.py", "from . import helper\nVALUE = helper.TWO * 21\n")
        archive.writestr(MU + "/_probe/helper.py", "TWO = 2\n")
        archive.writestr(MU + "/_probe/data.txt", "payload data")
    return path


def probe(payload, install):
    proc = subprocess.run([sys.executable, "-c", PROBE, payload, "yes" if install else "no"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.skipif(sys.version_info < (3, 10), reason="zipload installs nothing where zipimporter has no exec_module")
def test_each_file_is_compiled_once_and_the_modules_are_what_zipimport_makes(payload):
    plain, once = probe(payload, install=False), probe(payload, install=True)
    files = sorted(once["compiled"])
    assert [os.path.basename(name) for name in files] == ["__init__.py", "helper.py", "leaf.py"], once
    assert set(once["compiled"].values()) == {1}, once["compiled"]
    assert max(plain["compiled"].values()) == 2, plain["compiled"]  # the cost this saves (CPython's zipimport)
    for key in ("leaf", "package", "value", "missing", "data"):
        assert once[key] == plain[key], (key, once[key], plain[key])
    assert once["leaf"]["file"] == os.path.join(payload, MU, "_probe", "leaf.py")
    assert once["package"]["path"] == [os.path.join(payload, MU, "_probe")]
    assert once["missing"] == NAME.replace("leaf", "missing")


def test_outside_a_zip_it_steps_aside():
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import zipload
    assert zipload.CompileOnceFinder.find_spec(NAME, [os.path.join(REPO, "plugins", "module_utils")]) is None
    assert zipload.CompileOnceFinder.find_spec("json.decoder", ["/nonexistent.zip/json"]) is None
    assert zipload.CompileOnceFinder.find_spec(NAME, None) is None
