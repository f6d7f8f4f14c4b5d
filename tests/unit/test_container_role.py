# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The container role is one task over the container module, and its argument spec says the same as the module's."""

import os

import yaml

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container import ARGUMENT_SPEC

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "container")


def load(*parts):
    with open(os.path.join(ROLE, *parts), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_the_role_is_one_task_passing_every_option_by_its_own_variable():
    tasks = load("tasks", "main.yml")
    assert len(tasks) == 1
    args = tasks[0]["kernelbox.containers.container"]
    assert set(args) == set(ARGUMENT_SPEC)
    for key, value in args.items():
        assert "container_%s" % key in value, (key, value)
        if key != "name":  # left out when undefined or null: partial updates work through the role too
            assert value.endswith("else omit }}"), (key, value)


def test_the_argument_spec_matches_the_module():
    options = load("meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(options) == {"container_" + key for key in ARGUMENT_SPEC}
    for key, spec in ARGUMENT_SPEC.items():
        option = options["container_" + key]
        assert option["type"] == spec.get("type", "str"), key
        assert option.get("choices") == spec.get("choices"), key
        assert option.get("elements") == spec.get("elements"), key
        assert bool(option.get("required")) == bool(spec.get("required")), key
        assert set(option.get("options") or {}) == set(spec.get("options") or {}), key


def test_every_default_the_role_sets_is_prefixed_and_declared():
    defaults = load("defaults", "main.yml") or {}
    options = load("meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    for name, value in defaults.items():
        assert name.startswith("container_") and options[name].get("default") == value, name


def test_the_registry_options_are_image_layers_own():
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container, image_pull
    assert container.IMAGE_OPTIONS == image_pull.REGISTRY_OPTIONS
