# kernelbox.containers: the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD := .build
COLLECTIONS := $(BUILD)/collections
VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL := $(BUILD)/kernelbox-containers-$(VERSION).tar.gz
export KB_VENV := $(abspath $(VENV))
export KB_COLLECTIONS_PATH := $(abspath $(COLLECTIONS))
# The demo's own virtualenv, with only what `make demo` installs: tests/integration/test_demo.py runs the demo from it.
DEMO_VENV := $(BUILD)/demo-venv
export KB_DEMO_VENV := $(abspath $(DEMO_VENV))
export ANSIBLE_COLLECTIONS_PATH := $(abspath $(COLLECTIONS))
export ANSIBLE_NOCOLOR := 1

.PHONY: demo teardown status test deps demo-venv install python-rootfs unit sanity docs-lint docs integration vm bench clean

## make demo: venv + collection from its tarball + playbooks/demo.yml against localhost
## (its Python container needs the Python rootfs, built once here; without it that part skips, saying why)
demo: install
	-tools/build-python-rootfs
	$(VENV)/bin/ansible-playbook -i playbooks/inventory.ini playbooks/demo.yml

teardown: install
	$(VENV)/bin/ansible-playbook -i playbooks/inventory.ini playbooks/teardown.yml

## make status: every container with its state, PID, IP, memory, CPU and PIDs (podman ps + podman stats)
status: install
	ANSIBLE_CALLBACK_RESULT_FORMAT=yaml $(VENV)/bin/ansible-playbook -i playbooks/inventory.ini playbooks/status.yml

## make test: the whole suite (unit, sanity, integration in a sandbox, pure cgroup v2 VM)
test: install demo-venv
	tests/run-all

# What tools/install-deps installs: `make demo` (and teardown, status) only what the demo needs, everything else
# what the tests need (qemu, a kernel image, the reference runtimes, linters).  A target's profile is inherited
# by its prerequisites (install, deps).
DEPS_PROFILE := test
demo teardown status: DEPS_PROFILE := demo

deps:
	tools/install-deps $(DEPS_PROFILE)

demo-venv:
	KB_VENV=$(KB_DEMO_VENV) tools/install-deps demo

## build the collection tarball and install it where every test and the demo load it from
install: deps
	rm -rf $(BUILD)/collections $(BUILD)/*.tar.gz
	mkdir -p $(BUILD)
	$(VENV)/bin/ansible-galaxy collection build --force --output-path $(BUILD) . >/dev/null
	$(VENV)/bin/ansible-galaxy collection install --force -p $(COLLECTIONS) $(TARBALL) >/dev/null
	@echo "installed $(TARBALL) into $(COLLECTIONS)"

## the Debian rootfs with Python for the demo's Python container, the connection plugin's tests and benchmark,
## built once (.build/rootfs)
python-rootfs:
	tools/build-python-rootfs

unit: install
	$(VENV)/bin/pytest -q tests/unit

sanity: install
	tests/run-sanity

## make docs-lint: antsibull-docs lint-collection-docs --plugin-docs (a stage of make test)
docs-lint: install
	PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/antsibull-docs lint-collection-docs --plugin-docs .

## make docs: the HTML documentation (modules, filter, roles, docs/*.md) under .build/docs/build/html, offline
docs: install
	tools/build-docs

integration: install demo-venv python-rootfs
	tests/sandbox --python $(PY) $(VENV)/bin/pytest -q tests/integration

vm: install
	tests/vm/run

bench: install
	bench/run

clean:
	rm -rf $(BUILD) tests/output .pytest_cache
