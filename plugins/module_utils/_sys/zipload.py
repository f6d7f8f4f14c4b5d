# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: our modules imported from a module's AnsiballZ zip, each compiled once.

On the target a module runs from a zip that holds sources only, so every file of ours it imports is compiled
on every task.  CPython's zipimport (3.9 to 3.13 at least) compiles it twice: ``find_spec`` builds the spec
with ``spec_from_loader``, which asks the loader's ``get_filename``, which compiles the module to learn where
its code would come from; ``exec_module`` then compiles it again to run it.  For the ``container`` module's
first converge, importing our files took 0.68 s instead of 0.30 s at a load of 5 (docs/performance.md).

``install()`` puts a finder on ``sys.meta_path``, right before the path finder, that answers for this
collection's module_utils only, and only where the parent package lives in a zip: the spec it returns is the
one zipimport would build (the same loader, ``__file__``, ``__path__``), its origin computed from the name
instead of by compiling.  The zipimporter still loads the module (one compile).  Anywhere else (a checkout,
mitogen's importer, the supervisor's code copy on disk) it steps aside and the normal machinery runs.
Python 3.9's zipimporter has no ``exec_module``; there nothing is installed.
"""

from __future__ import annotations

import importlib.machinery
import sys
import typing as t
import zipimport

PREFIX = "ansible_collections.kernelbox.containers.plugins.module_utils."


class CompileOnceFinder:
    """A meta path finder for ``PREFIX`` modules whose parent package is in a zip."""

    importers: t.Dict[str, t.Any] = {}

    @classmethod
    def find_spec(cls, name: str, path: t.Optional[t.Sequence[str]] = None,
                  target: t.Any = None) -> t.Optional[importlib.machinery.ModuleSpec]:
        if not name.startswith(PREFIX) or not path:
            return None
        leaf = name.rpartition(".")[2]
        for entry in path:
            importer = cls._importer(entry)
            if importer is None:
                return None  # not a zip: the normal machinery, for the whole package
            try:
                package = importer.is_package(name)
            except zipimport.ZipImportError:
                continue  # not in this portion
            where = "%s/%s" % (entry.rstrip("/"), leaf)
            spec = importlib.machinery.ModuleSpec(name, importer, is_package=package,
                                                  origin=where + ("/__init__.py" if package else ".py"))
            spec.has_location = True  # __file__ is set from the origin, as zipimport's own spec does
            if package:
                spec.submodule_search_locations = [where]
            return spec
        return None

    @classmethod
    def _importer(cls, entry: str) -> t.Any:
        if entry not in cls.importers:
            try:
                cls.importers[entry] = zipimport.zipimporter(entry)
            except (zipimport.ZipImportError, OSError, TypeError):
                cls.importers[entry] = None
        return cls.importers[entry]


def install() -> None:
    """Put the finder right before the path finder (which would ask zipimport); idempotent.

    Not first: finders placed before the path finder (ansible-test's import sanity checks, mitogen's importer)
    keep their turn.  Nothing on a Python whose zipimporter cannot load from a spec (3.9), nor where no path
    finder is on ``sys.meta_path``.
    """
    if not hasattr(zipimport.zipimporter, "exec_module") or CompileOnceFinder in sys.meta_path:
        return
    if importlib.machinery.PathFinder in sys.meta_path:
        where = sys.meta_path.index(importlib.machinery.PathFinder)
        sys.meta_path.insert(where, CompileOnceFinder)  # type: ignore[arg-type]


install()  # on import: the first import of ours in every module (flow, deps) brings this in before the rest
