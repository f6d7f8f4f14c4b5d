# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: ``kernelbox-runtime``, the OCI runtime command line, as runc has it.

    kernelbox-runtime [--root DIR] [--log FILE] [--log-format text|json] [--systemd-cgroup] [--debug] COMMAND ...

Commands: create, start, run, state, kill, delete, exec, ps, list, pause,
resume, update, features, spec (see ``docs/oci-runtime.md``).  Global flags
come before the command, as clients pass them.  Exit status: 0 on success;
1 on any error, with the message on stderr and, with ``--log``, as a log
line in the chosen format (``{"level":"error","msg":...,"time":...}`` with
json, which conmon and containerd read back); 2 for a usage error; ``run``
and a foreground ``exec`` exit with the container process's status (128+N
for signal N).

Every command imports only what it needs: the Python start-up is part of
every call a client makes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

PROG = "kernelbox-runtime"
VERSION = "0.1.0"
SPEC_VERSION = "1.3.0"  # spec.OCI_VERSION_MAX, spelled out so that --version imports nothing (a unit test checks)


class Log:
    """runc's logging: --log FILE (else stderr), text (logrus style) or json lines."""

    def __init__(self, path: t.Optional[str], fmt: str, debug: bool) -> None:
        self.path = path
        self.fmt = fmt
        self.debug_on = debug

    def _line(self, level: str, msg: str) -> str:
        from datetime import datetime, timezone
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if self.fmt == "json":
            return json.dumps({"level": level, "msg": msg, "time": now})
        return 'time="%s" level=%s msg=%s' % (now, level, json.dumps(msg))

    def emit(self, level: str, msg: str) -> None:
        line = self._line(level, msg) + "\n"
        if self.path:
            try:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(line)
            except OSError:
                pass
            if level == "error":
                sys.stderr.write(msg + "\n")
        else:
            sys.stderr.write(line)
        sys.stderr.flush()

    def error(self, msg: str) -> None:
        self.emit("error", msg)

    def warning(self, msg: str) -> None:
        self.emit("warning", msg)

    def debug(self, msg: str) -> None:
        if self.debug_on:
            self.emit("debug", msg)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> t.NoReturn:
        self.print_usage(sys.stderr)
        sys.stderr.write("%s: %s\n" % (PROG, message))
        raise SystemExit(2)


def parser() -> Parser:
    top = Parser(prog=PROG, description="An OCI runtime over kernelbox's container launcher.")
    top.add_argument("--root", default=None, help="state directory (default /run/kernelbox-runtime)")
    top.add_argument("--log", default=None, help="log file (default: stderr)")
    top.add_argument("--log-format", default="text", choices=("text", "json"))
    top.add_argument("--systemd-cgroup", action="store_true", help="refused: use the cgroupfs manager")
    top.add_argument("--debug", action="store_true")
    top.add_argument("--rootless", default="false", help="only 'false' or 'auto' (kernelbox runs as root)")
    top.add_argument("--criu", default=None, help=argparse.SUPPRESS)
    top.add_argument("-v", "--version", action="store_true")
    sub = top.add_subparsers(dest="command", parser_class=Parser)

    def with_id(name: str, text: str) -> Parser:
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("container_id")
        return cmd

    for name, text in (("create", "create a container (its process waits for start)"),
                       ("run", "create and start a container, and wait for it unless --detach")):
        cmd = with_id(name, text)
        cmd.add_argument("-b", "--bundle", default=".")
        cmd.add_argument("--console-socket", default=None)
        cmd.add_argument("--pid-file", default=None)
        cmd.add_argument("--preserve-fds", type=int, default=0)
        cmd.add_argument("--no-pivot", action="store_true")
        cmd.add_argument("--no-new-keyring", action="store_true")
        if name == "run":
            cmd.add_argument("-d", "--detach", action="store_true")
            cmd.add_argument("--keep", action="store_true")
            cmd.add_argument("--no-subreaper", action="store_true")
    with_id("start", "start a created container")
    with_id("state", "print the state of a container (JSON)")
    cmd = with_id("kill", "send a signal to the container's init (SIGTERM by default)")
    cmd.add_argument("signal", nargs="?", default="SIGTERM")
    cmd.add_argument("-a", "--all", action="store_true")
    cmd = with_id("delete", "delete a stopped (or, with --force, any) container")
    cmd.add_argument("-f", "--force", action="store_true")
    cmd = with_id("exec", "run a process in a container")
    cmd.add_argument("command_args", nargs=argparse.REMAINDER)
    cmd.add_argument("-p", "--process", default=None)
    cmd.add_argument("-d", "--detach", action="store_true")
    cmd.add_argument("--pid-file", default=None)
    cmd.add_argument("--console-socket", default=None)
    cmd.add_argument("-t", "--tty", action="store_true")
    cmd.add_argument("--cwd", default=None)
    cmd.add_argument("-e", "--env", action="append", default=[])
    cmd.add_argument("-u", "--user", default=None)
    cmd.add_argument("-g", "--additional-gids", action="append", type=int, default=[])
    cmd.add_argument("-c", "--cap", action="append", default=[])
    cmd.add_argument("--no-new-privs", action="store_true")
    cmd.add_argument("--preserve-fds", type=int, default=0)
    cmd.add_argument("--apparmor", default=None)
    cmd.add_argument("--process-label", default=None)
    cmd.add_argument("--ignore-paused", action="store_true", help=argparse.SUPPRESS)
    cmd = with_id("ps", "list the container's processes")
    cmd.add_argument("-f", "--format", default="table", choices=("table", "json"))
    cmd.add_argument("ps_args", nargs=argparse.REMAINDER)
    cmd = sub.add_parser("list", help="list containers")
    cmd.add_argument("-f", "--format", default="table", choices=("table", "json"))
    cmd.add_argument("-q", "--quiet", action="store_true")
    with_id("pause", "freeze every process of the container")
    with_id("resume", "thaw a paused container")
    cmd = with_id("update", "change the container's resource limits in place")
    cmd.add_argument("-r", "--resources", default=None, help="linux.resources JSON file, or - for stdin")
    for flag in ("--memory", "--memory-reservation", "--memory-swap", "--kernel-memory", "--cpu-period",
                 "--cpu-quota", "--cpu-shares", "--cpu-rt-period", "--cpu-rt-runtime", "--cpuset-cpus",
                 "--cpuset-mems", "--pids-limit", "--blkio-weight"):
        cmd.add_argument(flag, default=None)
    sub.add_parser("features", help="print the runtime-spec features document")
    cmd = sub.add_parser("spec", help="write a config.json to start from")
    cmd.add_argument("-b", "--bundle", default=".")
    cmd.add_argument("--rootless", dest="spec_rootless", action="store_true")
    return top


def main(argv: t.Optional[t.Sequence[str]] = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    log = Log(args.log, args.log_format, args.debug)
    if args.version:
        sys.stdout.write("%s version %s\nspec: %s\n" % (PROG, VERSION, SPEC_VERSION))
        return 0
    if not args.command:
        parser().print_help(sys.stderr)
        return 2
    try:
        if args.rootless not in ("false", "auto"):
            raise KernelboxError("--rootless %s: kernelbox-runtime runs as root only" % args.rootless)
        return dispatch(args, log)
    except KernelboxError as exc:
        log.error(exc.msg)
        return 1
    except OSError as exc:
        log.error("%s%s" % (exc.strerror or exc, (": %s" % exc.filename) if exc.filename else ""))
        return 1
    except Exception as exc:  # pylint: disable=broad-except  # a client reads the error, never a traceback
        from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError
        if isinstance(exc, ValidationError):  # imported only now: it costs every call its start-up time
            log.error(str(exc))
            return 1
        import traceback
        log.error("internal error: %s: %s" % (type(exc).__name__, exc))
        log.debug(traceback.format_exc())
        return 1


def dispatch(args: argparse.Namespace, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import store as oci_store
    store = oci_store.Store(args.root or oci_store.DEFAULT_ROOT)
    handler = COMMANDS[args.command]
    return handler(args, store, log)


def _create(args: argparse.Namespace, store: t.Any, log: Log, gate: bool, console_fd: t.Optional[int] = None) -> t.Any:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import create
    if args.no_pivot:
        raise KernelboxError("--no-pivot: kernelbox always uses pivot_root (a chroot can be escaped); a rootfs on "
                             "a ramdisk works too")
    if args.preserve_fds < 0:
        raise KernelboxError("--preserve-fds must not be negative")
    options = create.CreateOptions(bundle=args.bundle, pid_file=args.pid_file, console_socket=args.console_socket,
                                   preserve_fds=args.preserve_fds, systemd_cgroup=args.systemd_cgroup, gate=gate,
                                   console_fd=console_fd)
    try:
        return create.create(store, args.container_id, options)
    finally:
        for warning in options.warnings:
            log.warning(warning)


def cmd_create(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    _create(args, store, log, gate=True)
    return 0


def cmd_run(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import containers, tty
    ours = theirs = None
    if not args.detach and not args.console_socket and _wants_terminal(args.bundle):
        ours, theirs = tty.socket_pair()  # the foreground run is its own console socket
    try:
        record = _create(args, store, log, gate=False, console_fd=theirs)
    finally:
        if theirs is not None:
            os.close(theirs)
    try:
        containers.poststart(record)
    except KernelboxError:
        containers.delete(store, record.id, force=True, warn=log.warning)
        raise
    if args.detach:
        return 0
    if ours is not None:
        tty.relay_from(ours)
    status = containers.wait(record)
    if not args.keep:
        containers.delete(store, record.id, force=True, warn=log.warning)
    return status


def _wants_terminal(bundle: str) -> bool:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as handle:
            data = json.loads(handle.read(64 << 20).decode("utf-8"))
        return bool(isinstance(data, dict) and (data.get("process") or {}).get("terminal"))
    except (OSError, ValueError, AttributeError):
        return False  # create reports the problem with the bundle


def cmd_start(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import containers
    containers.start(store, args.container_id)
    return 0


def cmd_state(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import containers
    sys.stdout.write(json.dumps(containers.state_of(store, args.container_id), indent=2) + "\n")
    return 0


def cmd_kill(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import containers
    containers.kill(store, args.container_id, containers.signal_number(args.signal), everyone=args.all)
    return 0


def cmd_delete(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import containers
    containers.delete(store, args.container_id, force=args.force, warn=log.warning)
    return 0


def cmd_exec(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import execute
    command = list(args.command_args)
    if command and command[0] == "--":
        command = command[1:]
    options = execute.ExecOptions(args=command, process_file=args.process, detach=args.detach,
                                  pid_file=args.pid_file, console_socket=args.console_socket, tty=args.tty,
                                  cwd=args.cwd, env=list(args.env), user=args.user,
                                  additional_gids=list(args.additional_gids), caps=list(args.cap),
                                  no_new_privs=args.no_new_privs, preserve_fds=args.preserve_fds,
                                  apparmor=args.apparmor, process_label=args.process_label)
    return execute.run(store, args.container_id, options)


def cmd_ps(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import containers
    pids = containers.processes(store, args.container_id)
    if args.format == "json":
        sys.stdout.write(json.dumps(pids) + "\n")
        return 0
    if args.ps_args:
        raise KernelboxError("ps: options for ps(1) are not supported; use --format json, or the table")
    lines = ["%-8s %s" % ("PID", "CMD")]
    for pid in pids:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                cmd = handle.read(4096).replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        lines.append("%-8d %s" % (pid, cmd))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def cmd_list(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import store as oci_store
    states = []
    for container_id in store.ids():
        try:
            states.append(oci_store.state_document(store.load(container_id)))
        except (OSError, KernelboxError):
            continue
    if args.quiet:
        sys.stdout.write("".join("%s\n" % s["id"] for s in states))
    elif args.format == "json":
        sys.stdout.write(json.dumps(states) + "\n")
    else:
        rows = ["%-24s %-8s %-10s %-40s %s" % ("ID", "PID", "STATUS", "BUNDLE", "CREATED")]
        rows += ["%-24s %-8s %-10s %-40s %s" % (s["id"], s["pid"], s["status"], s["bundle"], s["created"])
                 for s in states]
        sys.stdout.write("\n".join(rows) + "\n")
    return 0


def cmd_pause(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import containers
    containers.pause(store, args.container_id, frozen=args.command == "pause")
    return 0


def cmd_update(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import create
    changes = update_changes(args)
    for name, before, after in create.update(store, args.container_id, changes):
        log.debug("%s: %s -> %s" % (name, before, after))
    return 0


def update_changes(args: argparse.Namespace) -> t.Dict[str, t.Any]:
    """linux.resources from --resources and the flags (the flags win), as runc reads them."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import (
        ValidationError, size_bytes)
    changes: t.Dict[str, t.Any] = {}
    if args.resources:
        try:
            if args.resources == "-":
                changes = json.loads(sys.stdin.read())
            else:
                with open(args.resources, "rb") as handle:
                    changes = json.loads(handle.read(16 << 20).decode("utf-8"))
        except OSError as exc:
            raise KernelboxError("--resources %s: %s" % (args.resources, exc.strerror))
        except ValueError as exc:
            raise KernelboxError("--resources %s: not valid JSON: %s" % (args.resources, exc))
        if not isinstance(changes, dict):
            raise KernelboxError("--resources: must hold a linux.resources object")
    for flag, reason in (("kernel_memory", "kernel memory has no cgroup v2 limit"),
                         ("cpu_rt_period", "cgroup v2 has no realtime CPU limits"),
                         ("cpu_rt_runtime", "cgroup v2 has no realtime CPU limits"),
                         ("blkio_weight", "blockIO weights are not supported")):
        if getattr(args, flag) is not None:
            raise KernelboxError("--%s: %s" % (flag.replace("_", "-"), reason))

    def size(flag: str) -> int:
        value = getattr(args, flag)
        try:
            return -1 if str(value).strip() == "-1" else int(size_bytes(value, "--" + flag.replace("_", "-")))
        except ValidationError as exc:
            raise KernelboxError(str(exc))

    def number(flag: str) -> int:
        try:
            return int(getattr(args, flag))
        except ValueError:
            raise KernelboxError("--%s: %r is not a number" % (flag.replace("_", "-"), getattr(args, flag)))

    flags = (("memory", "memory", "limit", size), ("memory_reservation", "memory", "reservation", size),
             ("memory_swap", "memory", "swap", size), ("cpu_period", "cpu", "period", number),
             ("cpu_quota", "cpu", "quota", number), ("cpu_shares", "cpu", "shares", number),
             ("pids_limit", "pids", "limit", number))
    for flag, section, key, parse in flags:
        if getattr(args, flag) is not None:
            changes.setdefault(section, {})[key] = parse(flag)
    for flag, key in (("cpuset_cpus", "cpus"), ("cpuset_mems", "mems")):
        if getattr(args, flag) is not None:
            changes.setdefault("cpu", {})[key] = getattr(args, flag)
    if not changes:
        raise KernelboxError("update: nothing to change (give --resources or a limit flag)")
    return changes


def cmd_features(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import documents
    sys.stdout.write(json.dumps(documents.features(), indent=2) + "\n")
    return 0


def cmd_spec(args: argparse.Namespace, store: t.Any, log: Log) -> int:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import documents
    if args.spec_rootless:
        raise KernelboxError("spec --rootless: kernelbox-runtime runs as root only")
    path = os.path.join(args.bundle, "config.json")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise KernelboxError("%s exists; remove it first" % path)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(documents.example_spec(), indent=2) + "\n")
    return 0


COMMANDS: t.Dict[str, t.Callable[[argparse.Namespace, t.Any, Log], int]] = {
    "create": cmd_create, "run": cmd_run, "start": cmd_start, "state": cmd_state, "kill": cmd_kill,
    "delete": cmd_delete, "exec": cmd_exec, "ps": cmd_ps, "list": cmd_list, "pause": cmd_pause,
    "resume": cmd_pause, "update": cmd_update, "features": cmd_features, "spec": cmd_spec,
}
