# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: containers as systemd units, where PID 1 is systemd."""

from __future__ import annotations

import os
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

SYSTEMD_RUN_DIR = "/run/systemd/system"


def available() -> bool:
    """sd_booted(): PID 1 is systemd."""
    return os.path.isdir(SYSTEMD_RUN_DIR)


class SystemdBackend:
    kind = "systemd"

    def __init__(self, layout: state.Layout = state.DEFAULT_LAYOUT) -> None:
        self.layout = layout

    def _refuse(self) -> t.NoReturn:
        raise KernelboxError("supervisor=systemd: not implemented yet")

    def start(self, name: str) -> state.Runtime:
        self._refuse()

    def stop(self, name: str, timeout: float) -> t.Optional[state.Runtime]:
        self._refuse()

    def reload(self, name: str) -> None:
        self._refuse()

    def adopt(self) -> None:
        self._refuse()

    def supervisor_alive(self, runtime: t.Optional[state.Runtime]) -> bool:
        return available()
