# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every docs/<topic>.md page is in the HTML documentation (make docs): a stub in docs/docsite/rst with the
page's title, and an entry in docs/docsite/extra-docs.yml.  `tools/build-docs stubs` writes the stubs."""
import glob
import os

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")


def _topics(pattern):
    return sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(DOCS, pattern)))


def _toctree_entries():
    with open(os.path.join(DOCS, "docsite", "extra-docs.yml"), encoding="utf-8") as f:
        index = yaml.safe_load(f)
    return [entry if isinstance(entry, str) else entry["ref"]
            for section in index["sections"] for entry in section["toctree"]]


def test_every_page_has_a_stub_and_every_stub_a_page():
    assert _topics("*.md"), "no docs/*.md pages found"
    pages, stubs = _topics("*.md"), _topics("docsite/rst/*.rst")
    missing, orphans = sorted(set(pages) - set(stubs)), sorted(set(stubs) - set(pages))
    assert pages == stubs, ("pages without a stub: %s, stubs without a page: %s; run `tools/build-docs stubs` "
                            "(and list new pages in docs/docsite/extra-docs.yml)" % (missing, orphans))


def test_every_page_is_in_the_index_once():
    entries = _toctree_entries()
    assert sorted(entries) == _topics("*.md"), ("each docs/<topic>.md goes into docs/docsite/extra-docs.yml once "
                                                "(a section's toctree); listed: %s" % sorted(entries))


def test_stub_titles_match_their_pages():
    for topic in _topics("*.md"):
        with open(os.path.join(DOCS, topic + ".md"), encoding="utf-8") as f:
            title = f.readline().rstrip("\n")
        with open(os.path.join(DOCS, "docsite", "rst", topic + ".rst"), encoding="utf-8") as f:
            stub = f.read()
        assert title.startswith("# "), "docs/%s.md must start with a '# Title' line" % topic
        assert "\n%s\n%s\n" % (title[2:], "=" * len(title[2:])) in stub, "run tools/build-docs stubs (%s)" % topic
        assert ".. _ansible_collections.kernelbox.containers.docsite.%s:" % topic in stub
