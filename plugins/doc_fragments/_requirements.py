# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: target requirements shared by the modules."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
requirements:
  - Linux; the target runs as root (C(become=true)).
  - Python >= 3.9 on the target.
  - psutil >= 5.9 (distro package C(python3-psutil) or C(pip install psutil)).
"""
