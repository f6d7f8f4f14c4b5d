# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Drive the kernelbox connection plugin's own methods (exec_command, put_file, fetch_file) directly, loaded
from the installed collection by Ansible's plugin loader, the way a task executor does: so a test can hand it
the exact paths a hostile container prepared, which no module would.

Run as a script (a fresh process, so the collection loader never enters the test process)::

    python connection_driver.py '{"container": "web", "options": {...}, "ops": [["exec", "id"], ...]}'

and read one JSON result per op from stdout: ``{"ok": true, "rc": 0, "stdout": "...", "stderr": "..."}`` or
``{"ok": false, "error": "AnsibleFileNotFound", "msg": "..."}``.
"""

import json
import sys


def main(argv):
    spec = json.loads(argv[0])
    from ansible.plugins.loader import connection_loader, init_plugin_loader
    from ansible.playbook.play_context import PlayContext
    init_plugin_loader(spec.get("collections_paths") or [])
    connection = connection_loader.get("kernelbox.containers.kernelbox", PlayContext())
    options = {"ansible_host": spec["container"]}
    options.update(spec.get("options") or {})
    connection.set_options(var_options=options)
    results = []
    for op in spec["ops"]:
        try:
            if op[0] == "exec":
                rc, out, err = connection.exec_command(op[1], in_data=op[2].encode() if len(op) > 2 else None)
                results.append({"ok": True, "rc": rc, "stdout": out.decode(errors="replace"),
                                "stderr": err.decode(errors="replace")})
            elif op[0] == "put":
                connection.put_file(op[1], op[2])
                results.append({"ok": True})
            elif op[0] == "fetch":
                connection.fetch_file(op[1], op[2])
                results.append({"ok": True})
            else:
                raise ValueError("unknown op %r" % (op[0],))
        except Exception as exc:  # pylint: disable=broad-except  # the test asserts on the class and message
            results.append({"ok": False, "error": type(exc).__name__, "msg": str(exc)})
    connection.close()
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
