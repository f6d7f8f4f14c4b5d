# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stand-in for ansible-test's get-pip bootstrap script.

ansible-test downloads get-pip.py from ci-files.testing.ansible.com, which CI
machines here cannot reach (only PyPI is reachable).  It looks for the script
in its cache first, so tests/run-sanity puts this file there: it seeds pip
from the interpreter's own ensurepip wheel, then installs what ansible-test
asked for (the pinned pip itself included) from PyPI, as get-pip.py would.
"""

import ensurepip
import subprocess
import sys


def main():
    ensurepip.bootstrap(upgrade=True)
    args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
    return subprocess.call([sys.executable, "-m", "pip", "install"] + args)


if __name__ == "__main__":
    sys.exit(main())
