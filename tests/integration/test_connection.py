# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The kernelbox connection plugin, through ansible-playbook, into real containers started by container_process.

One playbook per scenario (an Ansible run costs more than the work): a play on the container's host starts the
container and adds it to the inventory with the documented add_host pattern (container_info + the
container_hosts filter); a play on the container hosts runs ordinary modules, pipelined on one alias and not on
another; a last play removes the container.  What the modules did is checked from the host, through the rootfs
directory and /proc, never through the plugin.
"""

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from harness import fsevents, sshd
from harness.ansible_runner import HARNESS, collections_path, venv_bin
from harness.containers import busybox_rootfs, containers, python_rootfs  # noqa: F401  pylint: disable=unused-import
from harness.containers import ID_SHIFT, cgroup_parent

DISTRO_PYTHON = "/usr/bin/python3"

STATUS_KEYS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")


def start_play(names, rootfs, host="localhost", extra=None):
    """Start the containers on ``host`` and add each as inventory hosts <alias>, one per alias in ``extra``."""
    tasks = [{"name": "start %s" % name, "kernelbox.containers.container_process": {
        "name": name, "rootfs": rootfs, "command": ["/bin/sleep", "infinity"], "hostname": name,
        "stop_timeout": 2, "cgroup": {"parent": cgroup_parent()}}} for name in names]
    tasks.append({"name": "info", "kernelbox.containers.container_info": {"name": names},
                  "register": "kernelbox_info"})
    tasks.append({"name": "init status", "ansible.builtin.slurp": {"src": "/proc/{{ item.pid }}/status"},
                  "loop": "{{ kernelbox_info.containers }}", "loop_control": {"label": "{{ item.name }}"}})
    tasks.append({
        "name": "add the containers as hosts",
        "ansible.builtin.add_host": {
            "name": "{{ item.0.name }}-{{ item.1.alias }}", "groups": ["kbt_containers"],
            "ansible_connection": "kernelbox.containers.kernelbox", "ansible_host": "{{ item.0.container }}",
            "kernelbox_host": "{{ item.0.kernelbox_host }}", "kernelbox_host_user": "{{ item.0.kernelbox_host_user }}",
            "kernelbox_host_port": "{{ item.0.kernelbox_host_port }}",
            "kernelbox_host_ssh_options": "{{ item.0.kernelbox_host_ssh_options }}",
            "kernelbox_container_host": "{{ item.0.host }}", "kernelbox_address": "{{ item.0.address }}",
            "ansible_pipelining": "{{ item.1.pipelining }}", "kernelbox_inline_limit": "{{ item.1.inline }}",
            "ansible_python_interpreter": "/usr/bin/python3", "alias": "{{ item.1.alias }}"},
        "loop": "{{ ansible_play_hosts | kernelbox.containers.container_hosts(hostvars) | product(aliases) | list }}",
        "loop_control": {"label": "{{ item.0.name }}-{{ item.1.alias }}"},
        "vars": {"aliases": extra or [{"alias": "piped", "pipelining": True, "inline": 8388608},
                                      {"alias": "plain", "pipelining": False, "inline": 8388608}]}})
    return {"name": "start", "hosts": host, "gather_facts": False, "tasks": tasks}


def remove_play(names, host="localhost"):
    return {"name": "remove", "hosts": host, "gather_facts": False, "tasks": [
        {"name": "remove %s" % name, "kernelbox.containers.container_process": {"name": name, "state": "absent"}}
        for name in names]}


TEMPLATE = "# written by the connection test's template task\nname={{ alias }}\nport=8080\n"


def module_tasks(work):
    """Ordinary modules inside the container, each alias in its own directory (/srv/<alias>); ``work`` is a
    controller directory for the template and the fetched files."""
    where = "/srv/{{ alias }}"
    template = os.path.join(work, "app.conf.j2")
    with open(template, "w") as handle:
        handle.write(TEMPLATE)
    fetch_dir = os.path.join(work, "fetched")
    return [
        {"name": "command", "ansible.builtin.command": "cat /etc/hostname", "register": "hostname"},
        {"name": "file", "ansible.builtin.file": {"path": where, "state": "directory", "mode": "0755"}},
        {"name": "copy", "ansible.builtin.copy": {"content": "page of {{ alias }}\n", "dest": where + "/index.html",
                                                  "mode": "0640"}},
        {"name": "copy again", "ansible.builtin.copy": {"content": "page of {{ alias }}\n",
                                                        "dest": where + "/index.html", "mode": "0640"}},
        {"name": "template", "ansible.builtin.template": {"src": template, "dest": where + "/app.conf"}},
        {"name": "lineinfile", "ansible.builtin.lineinfile": {"path": where + "/app.conf", "regexp": "^port=",
                                                              "line": "port=8081"}},
        {"name": "fetch", "ansible.builtin.fetch": {"src": where + "/app.conf", "dest": fetch_dir + "/"}},
        {"name": "status of the module process", "ansible.builtin.slurp": {"src": "/proc/self/status"},
         "register": "status"},
        {"name": "uid map of the module process", "ansible.builtin.slurp": {"src": "/proc/self/uid_map"}},
        {"name": "cgroup of the module process", "ansible.builtin.slurp": {"src": "/proc/self/cgroup"}},
        {"name": "raw", "ansible.builtin.raw": "echo raw in $(cat /etc/hostname)"},
        {"name": "become with su", "ansible.builtin.command": "id -u", "become": True, "become_user": "nobody",
         "become_method": "ansible.builtin.su", "become_flags": "-s /bin/sh"},  # nobody's shell is nologin
        {"name": "become with sudo", "ansible.builtin.command": "id -un", "become": True, "become_user": "daemon",
         "become_method": "ansible.builtin.sudo"},
        {"name": "file absent", "ansible.builtin.file": {"path": where + "/gone", "state": "absent"}},
    ]


def play(ansible, plays, timeout=900, **kwargs):
    run = ansible.playbook(json.dumps(plays, indent=1), timeout=timeout, **kwargs)
    assert run.tasks, "the playbook did not run (rc %d):\n%s\n%s" % (run.rc, run.stdout[-3000:], run.stderr[-3000:])
    return run


def by_task(run, name):
    """host -> the result of task ``name`` on it."""
    return {task.host: task for task in run.tasks if task.task == name}


def decoded(task):
    return base64.b64decode(task["content"]).decode()


def init_status(run, name):
    """/proc/PID/status of the container's init, as the start play read it on the host."""
    for task in run.tasks:
        if task.task == "init status":
            for item in task["results"]:
                if item["item"]["name"] == name:
                    return dict(line.split(":\t", 1) for line in decoded(item).splitlines() if ":\t" in line)
    raise AssertionError("no init status for %s" % name)


def assert_no_failures(run):
    failed = [(task.host, task.task, task.result.get("msg"), task.result.get("module_stderr"))
              for task in run.tasks if task.failed]
    assert not failed, "tasks failed: %s\n%s" % (failed, run.stdout[-4000:])


def check_modules(run, rootfs, name, work, hosts):
    """What every alias in ``hosts`` (inventory name -> alias) did, checked from the host."""
    assert_no_failures(run)
    init = init_status(run, name)
    for host, alias in hosts.items():
        srv = os.path.join(rootfs, "srv", alias)
        with open(os.path.join(srv, "index.html")) as handle:
            assert handle.read() == "page of %s\n" % alias
        info = os.stat(os.path.join(srv, "index.html"))
        # Written by the container's root, whose host id is the mapped one, never host root.
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (ID_SHIFT, ID_SHIFT, 0o640)
        with open(os.path.join(srv, "app.conf")) as handle:
            conf = handle.read()
        assert "name=%s\n" % alias in conf and "port=8081\n" in conf and "port=8080" not in conf
        with open(os.path.join(work, "fetched", host, "srv", alias, "app.conf")) as handle:
            assert handle.read() == conf
        assert by_task(run, "command")[host]["stdout"] == name
        assert by_task(run, "raw")[host]["stdout"].strip() == "raw in %s" % name
        assert by_task(run, "copy")[host].changed and not by_task(run, "copy again")[host].changed
        assert by_task(run, "fetch")[host].changed
        status = dict(line.split(":\t", 1) for line in decoded(by_task(run, "status of the module process")[host])
                      .splitlines() if ":\t" in line)
        # The module's own process has the container init's capabilities, seccomp and no_new_privs, never more.
        for key in STATUS_KEYS:
            assert status[key].split() == init[key].split(), (host, key, status[key], init[key])
        assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
        assert decoded(by_task(run, "uid map of the module process")[host]).split() == ["0", str(ID_SHIFT), "65536"]
        # Its own group below the container's, as the container's cgroup namespace shows it.
        assert decoded(by_task(run, "cgroup of the module process")[host]).splitlines()[-1].startswith("0::/kb-exec-")
        assert by_task(run, "become with su")[host]["stdout"] == "65534"
        assert by_task(run, "become with sudo")[host]["stdout"] == "daemon"


def test_modules_run_inside_a_container_on_the_controller(ansible_distro, python_rootfs, containers, tmp_path):
    name = containers("kbt-conn")
    plays = [start_play([name], python_rootfs),
             {"name": "inside", "hosts": "kbt_containers", "gather_facts": False, "tasks": module_tasks(str(tmp_path))},
             remove_play([name])]
    run = play(ansible_distro, plays)
    hosts = {name + "@localhost-piped": "piped", name + "@localhost-plain": "plain"}
    check_modules(run, python_rootfs, name, str(tmp_path), hosts)


# --- refusals: a missing, a stopped container, and one without Python --------------------------------------

def test_missing_stopped_and_python_less_containers_are_refused_clearly(ansible_distro, busybox_rootfs, containers):
    running, stopped = containers("kbt-conn-bb"), containers("kbt-conn-stopped")
    start = {"name": "start", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "start %s" % name, "kernelbox.containers.container_process": {
            "name": name, "rootfs": busybox_rootfs, "command": ["/bin/sleep", "86400"], "stop_timeout": 1,
            "cgroup": {"parent": cgroup_parent()}}} for name in (running, stopped)] + [
        {"name": "stop", "kernelbox.containers.container_process": {"name": stopped, "state": "stopped"}},
        {"name": "hosts", "ansible.builtin.add_host": {
            "name": "{{ item }}", "groups": ["kbt_containers"], "ansible_connection": "kernelbox.containers.kernelbox",
            "ansible_pipelining": True,  # busybox's /root belongs to host root: no ~/.ansible/tmp there
            "kernelbox_output_limit": 4096, "kernelbox_timeout": 2},
         "loop": [running, stopped, "kbt-conn-none"]}]}
    inside = {"name": "inside", "hosts": "kbt_containers", "gather_facts": False, "tasks": [
        {"name": "raw", "ansible.builtin.raw": "echo raw works; cat /etc/hostname", "ignore_unreachable": True},
        {"name": "module", "ansible.builtin.command": "true", "ignore_errors": True, "ignore_unreachable": True},
        {"name": "flood", "ansible.builtin.raw": "yes kbt | head -c 100000", "ignore_errors": True,
         "ignore_unreachable": True},
        {"name": "hang", "ansible.builtin.raw": "sleep 600", "ignore_errors": True, "ignore_unreachable": True}]}
    run = play(ansible_distro, [start, inside, remove_play([running, stopped])])
    raw, module = by_task(run, "raw"), by_task(run, "module")
    assert raw[running].status == "ok" and raw[running]["stdout"].startswith("raw works")
    assert module[running].failed
    text = module[running]["module_stdout"] + module[running]["module_stderr"]
    assert "has no Python" in text and "ansible.builtin.raw" in text, module[running].result
    # Output over the limit: kept up to it, the rest counted, and the task fails saying so.
    flood = by_task(run, "flood")[running]
    assert flood.failed and len(flood["stdout"]) == 4096, (len(flood["stdout"]), flood.result)
    assert "kernelbox_output_limit (4096 bytes per stream) was dropped: stdout 95904 bytes" in flood["stderr"]
    hang = by_task(run, "hang")[running]
    assert hang.failed and hang["rc"] == -9 and "killed after 2s (kernelbox_timeout)" in hang["stderr"], hang.result
    assert raw["kbt-conn-none"].status == "unreachable"
    assert "no container named kbt-conn-none" in raw["kbt-conn-none"].msg
    assert raw[stopped].status == "unreachable"
    assert "container %s is not running (state: exited" % stopped in raw[stopped].msg, raw[stopped].msg


# --- a hostile container ---------------------------------------------------------------------------------

# PID 1 of the hostile container, run by the container's own Python: it tries to open /proc/PID/exe of every
# process of its PID namespace, for reading and for writing, and records what it got (and, where it could,
# which file that was).  A joined process of ours holds inside for a while (KERNELBOX_TEST_EXEC_HOLD), still the
# host's Python: its exe must never open.
EXE_ATTACKER = r"""
import errno, json, os, time
seen = set()
log = open("/tmp/kbt-attack.jsonl", "a", buffering=1)
def attempt(pid, flags):
    try:
        os.close(os.open("/proc/%d/exe" % pid, flags))
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
print("attacker ready", flush=True)
while True:
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, os.getpid()):
            continue
        pid = int(entry)
        try:
            name = open("/proc/%d/comm" % pid).read().strip()
        except OSError:
            continue
        if (pid, name) in seen:
            continue
        seen.add((pid, name))
        result = {"pid": pid, "name": name, "read": attempt(pid, os.O_RDONLY), "write": attempt(pid, os.O_WRONLY)}
        try:
            info = os.stat("/proc/%d/exe" % pid)
            result["exe"] = [info.st_dev, info.st_ino]
        except OSError as exc:
            result["exe"] = errno.errorcode.get(exc.errno, str(exc.errno))
        log.write(json.dumps(result) + "\n")
    time.sleep(0.005)
"""


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def drive(container, ops, env=None, timeout=600, **options):
    """The plugin's own exec_command/put_file/fetch_file on exactly these paths (harness/connection_driver.py)."""
    spec = {"container": container, "ops": ops, "options": options, "collections_paths": [collections_path()]}
    proc = subprocess.run([venv_bin("python"), os.path.join(HARNESS, "connection_driver.py"), json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), **(env or {})))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_a_hostile_container_cannot_make_the_host_write_read_or_expose_its_python(
        python_rootfs, containers, ansible_distro, tmp_path):
    name = containers("kbt-conn-hostile")
    with open(os.path.join(python_rootfs, "kbt-attack.py"), "w") as handle:
        handle.write(EXE_ATTACKER)
    secret, target = tmp_path / "kbt-host-secret", tmp_path / "kbt-host-target"
    secret.write_text("host secret\n")
    target.write_text("host original\n")
    for path in (secret, target):
        os.chmod(path, 0o644)
    upload = tmp_path / "upload"
    upload.write_text("from the controller\n")
    python = os.path.realpath(DISTRO_PYTHON)
    before = sha256(python)
    host_python = os.stat(python)
    run = play(ansible_distro, [{"name": "start", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "start", "kernelbox.containers.container_process": {
            "name": name, "rootfs": python_rootfs, "command": ["/usr/bin/python3", "-u", "/kbt-attack.py"],
            "stop_timeout": 1, "cgroup": {"parent": cgroup_parent()},
            "wait_for": {"file": "/tmp/kbt-attack.jsonl", "timeout": 120}}}]}])
    assert_no_failures(run)
    # The container plants its traps, as root inside: symlinks to the host's files (absolute, climbing with
    # '..', through a /proc magic link), into a directory, a FIFO.
    # The host's paths exist inside too (the container made them): what resolves inside lands there.
    plant = ("mkdir -p {d} && cd /tmp && ln -sf {t} kbt-put-abs && ln -sf ../../../../../../../../..{t} kbt-put-rel"
             " && ln -sf /proc/self/root{t} kbt-put-magic && ln -sf {s} kbt-fetch-abs"
             " && ln -sf ../../../../../../../../..{s} kbt-fetch-rel && ln -sf /proc/1/root{s} kbt-fetch-magic"
             " && ln -sfn {d} kbt-dir && rm -f kbt-fifo && mkfifo kbt-fifo && echo planted").format(
                 t=target, s=secret, d=tmp_path)
    watch = fsevents.Watch([str(secret), str(target)])  # the host's Python is opened by every helper run: sha256
    try:
        results = drive(name, [
            ["exec", plant],
            ["put", str(upload), "/tmp/kbt-put-abs"], ["put", str(upload), "/tmp/kbt-put-rel"],
            ["put", str(upload), "/tmp/kbt-put-magic"], ["put", str(upload), "/tmp/kbt-dir/kbt-host-target"],
            ["put", str(upload), "/tmp/kbt-fifo"],
            ["fetch", "/tmp/kbt-fetch-abs", str(tmp_path / "got-abs")],
            ["fetch", "/tmp/kbt-fetch-rel", str(tmp_path / "got-rel")],
            ["fetch", "/tmp/kbt-fetch-magic", str(tmp_path / "got-magic")],
            ["fetch", "/tmp/kbt-fifo", str(tmp_path / "got-fifo")],
            ["fetch", "/dev/zero", str(tmp_path / "got-zero")],
            ["exec", "cat {t}; stat -c %u:%g {t}; test -p /tmp/kbt-fifo && echo fifo".format(t=target)],
        ])
        # The same operations again while each joined process holds inside (before it drops privileges) for
        # the attacker to find.
        held = drive(name, [["exec", "echo held"], ["put", str(upload), "/tmp/kbt-held"],
                            ["fetch", "/tmp/kbt-held", str(tmp_path / "got-held")]],
                     env={"KERNELBOX_TEST_EXEC_HOLD": "1.5"})
        events = watch.events()
    finally:
        watch.close()
    log = drive(name, [["exec", "cat /tmp/kbt-attack.jsonl"]])[0]
    play(ansible_distro, [remove_play([name])])

    assert results[0]["ok"] and results[0]["stdout"].strip() == "planted", results[0]
    assert events == [], "the host's files were touched: %s" % events
    assert secret.read_text() == "host secret\n" and target.read_text() == "host original\n"
    assert sha256(python) == before
    # The symlinks resolved inside the container: the uploads landed at the same path inside it (one file,
    # written three times: absolute link, climbing link, directory link), owned by its root.
    assert [r["ok"] for r in results[1:3]] == [True, True], results[1:3]
    assert results[4]["ok"], results[4]
    # 'from the controller', owned by the container's root (its own /tmp is a tmpfs: asked from inside)
    assert results[11]["stdout"].split("\n") == ["from the controller", "0:0", "fifo", ""], results[11]
    assert results[3] == {"ok": False, "error": "AnsibleError", "msg": results[3]["msg"]}
    assert "symbolic links" in results[3]["msg"], results[3]
    # A FIFO with no reader: a non-blocking open fails at once (ENXIO), where a plain one would wait for ever.
    assert not results[5]["ok"] and "No such device or address" in results[5]["msg"], results[5]
    assert [r["error"] for r in results[6:8]] == ["AnsibleFileNotFound"] * 2, results[6:8]
    assert not results[8]["ok"] and "symbolic links" in results[8]["msg"], results[8]
    assert not results[9]["ok"] and "a FIFO" in results[9]["msg"], results[9]
    assert not results[10]["ok"] and "a character device" in results[10]["msg"], results[10]
    assert not any(os.path.exists(tmp_path / got) for got in ("got-abs", "got-rel", "got-magic", "got-fifo", "got-zero"))

    assert [r["ok"] for r in held] == [True] * 3 and held[0]["stdout"].strip() == "held"
    assert (tmp_path / "got-held").read_text() == "from the controller\n"
    attempts = [json.loads(line) for line in log["stdout"].splitlines()]
    joined = [a for a in attempts if a["name"].startswith("python") and a["read"] == "EACCES"]
    assert joined, "the attacker never saw a joined process: %s" % attempts
    for attempt in attempts:
        assert attempt["exe"] != [host_python.st_dev, host_python.st_ino], attempt
        if attempt in joined:
            assert attempt["write"] == "EACCES" and attempt["exe"] == "EACCES", attempt


# --- over SSH: sshd in namespaces of its own stands in for a remote host --------------------------------------

@pytest.fixture
def remote_host():
    directory = tempfile.mkdtemp(prefix="kbt-ssh-", dir="/tmp")  # short: a socket path has at most 107 bytes
    host = sshd.RemoteHost(directory).start()
    try:
        yield host
    finally:
        killed = host.stop()
        shutil.rmtree(directory, ignore_errors=True)
        assert not killed, "processes were left on the remote host: %s" % killed


def test_modules_run_inside_a_container_behind_ssh(ansible_distro, python_rootfs, containers, remote_host, tmp_path):
    """The container runs on the "remote host"; the plugin reaches it over ansible.builtin.ssh (as the add_host
    pattern derives from that host's own connection variables) and installs its helper there first: the code
    copy the container's start wrote is moved aside, so the plugin finds none of its own."""
    name = containers("kbt-conn-remote")
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {remote_host.alias: remote_host.inventory_vars()}}}))
    runtime = remote_host.path("/var/lib/kernelbox/runtime")
    aliases = [{"alias": "ssh-piped", "pipelining": True, "inline": 8388608},
               {"alias": "ssh-staged", "pipelining": False, "inline": 1}]  # every file staged, moved by SFTP
    start = start_play([name], python_rootfs, host=remote_host.alias, extra=aliases)
    start["tasks"].append({"name": "move the code copy aside", "ansible.builtin.shell":
                           "cd /var/lib/kernelbox/runtime && for d in $(ls | grep -E '^[0-9a-f]{16}$'); do mv $d .moved-$d; done"})
    plays = [start,
             {"name": "inside", "hosts": "kbt_containers", "gather_facts": False, "tasks": module_tasks(str(tmp_path))},
             remove_play([name], host=remote_host.alias)]
    run = play(ansible_distro, plays, inventory=str(inventory))
    check_modules(run, python_rootfs, name, str(tmp_path), {
        "%s@%s-%s" % (name, remote_host.alias, alias["alias"]): alias["alias"] for alias in aliases})
    added = by_task(run, "add the containers as hosts")[remote_host.alias]["results"][0]["add_host"]["host_vars"]
    assert (added["kernelbox_host"], added["kernelbox_host_user"]) == ("127.0.0.1", "root")
    assert added["kernelbox_host_ssh_options"]["private_key_file"].endswith("client_key")
    moved = [entry for entry in os.listdir(runtime) if entry.startswith(".moved-")]
    assert len(moved) == 1, os.listdir(runtime)
    digest = moved[0][len(".moved-"):]
    # The plugin installed the same code under the same digest, from the controller, over SSH.
    entry = os.path.join(runtime, digest, "kernelbox-connection.py")
    assert os.path.isfile(entry)
    assert os.stat(os.path.join(runtime, digest)).st_ino != os.stat(os.path.join(runtime, moved[0])).st_ino
    with open(entry, "rb") as new, open(os.path.join(runtime, moved[0], "kernelbox-connection.py"), "rb") as old:
        assert new.read() == old.read()
    # Files staged for SFTP are removed as soon as they are moved.
    assert os.listdir(remote_host.path("/var/lib/kernelbox/connection")) == []
