# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the steps that make a link's addresses a complete set (veth, bridge)."""

from __future__ import annotations

import functools
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import Step
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import links


def address_steps(session: links.Session, ifname: str, label: str, current: t.List[str], wanted: t.List[str],
                  added_because: str, netns: t.Optional[str] = None) -> t.List[Step]:
    """Steps turning ``current`` into ``wanted`` on ``ifname`` (``label`` names it in the actions).

    Removals come first, so a new address never becomes a secondary that the
    removal of the old primary would take with it; a kept address that shares
    a subnet with a removed one is checked, and added back if it went too.
    """
    to_add, to_remove = links.address_changes(current, wanted)
    kept = [cidr for cidr in wanted if cidr not in to_add]
    steps = [Step("remove address %s from %s" % (cidr, label),
                  functools.partial(links.remove_address, session, ifname, cidr, netns), "not listed")
             for cidr in to_remove]
    steps += [Step("keep address %s on %s" % (cidr, label),
                   functools.partial(links.restore_address, session, ifname, cidr, netns),
                   "the kernel deletes it too if a removed address was the primary of its subnet")
              for cidr in links.lost_with(to_remove, kept)]
    steps += [Step("add address %s to %s" % (cidr, label),
                   functools.partial(links.add_address, session, ifname, cidr, netns), added_because)
              for cidr in to_add]
    return steps
