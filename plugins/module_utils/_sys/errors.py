# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the domain error every layer may raise."""

from __future__ import annotations

import typing as t


class KernelboxError(Exception):
    """A failure with a message ready for the user, plus optional result fields.

    Kernel-object libraries raise it (or OSError) and never call fail_json;
    the module flow turns it into ``msg`` and merges ``result`` into the output.
    """

    def __init__(self, msg: str, **result: t.Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result
