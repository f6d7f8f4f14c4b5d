# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: libnftables' JSON API through ctypes.

libnftables (``libnftables.so.1``: Debian/Ubuntu ``libnftables1``, Fedora/RHEL
``nftables``) is the library behind the ``nft`` command and firewalld.  Its C
API takes a buffer of commands and, with JSON output on, answers in the JSON
schema of libnftables-json(5).  Debian's ``python3-nftables`` is a thin ctypes
wrapper of the same five calls, but it is not on PyPI, so a virtualenv cannot
import it; binding the calls here works from any Python >= 3.9 and needs
nothing but the shared library.

* Commands go in as JSON (``{"nftables": [{"add": {...}}, ...]}``): values are
  data, so nothing a user or a container names can be parsed as syntax.  Only
  constant text that holds no such value may use nft's own language
  (``apply_text``).
* One ``run()`` is one netlink transaction: the kernel applies every command
  of the buffer or none.
* Errors are ``NftError`` with libnftables' own message, never a silent pass.
"""

from __future__ import annotations

import ctypes
import json
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

LIBRARY = "libnftables.so.1"
# include/nftables/libnftables.h: enum nft_output_flags
NFT_CTX_OUTPUT_HANDLE = 1 << 3
NFT_CTX_OUTPUT_JSON = 1 << 4
NFT_CTX_DEFAULT = 0


class NftError(KernelboxError):
    """libnftables refused a command; nothing of that transaction was applied."""


class NftUnavailable(ImportError):
    """libnftables.so.1 cannot be loaded (the package is missing)."""


_LIB: t.Optional[t.Any] = None


def load_library() -> t.Any:
    """The libnftables handle, loaded once; NftUnavailable when it is not installed."""
    global _LIB  # pylint: disable=global-statement
    if _LIB is None:
        try:
            lib = ctypes.CDLL(LIBRARY, use_errno=True)
        except OSError as exc:
            raise NftUnavailable("cannot load %s: %s" % (LIBRARY, exc))
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.restype = None
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.restype = None
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).restype = ctypes.c_int
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).restype = ctypes.c_char_p
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _LIB = lib
    return _LIB


def available() -> bool:
    try:
        load_library()
    except NftUnavailable:
        return False
    return True


def command_summary(commands: t.Sequence[t.Mapping[str, t.Any]], limit: int = 3) -> str:
    """'add rule, delete element (+5 more)': what a failed batch tried, for the error message."""
    names = []
    for command in commands:
        verb = next(iter(command), "?")
        body = command.get(verb)
        noun = next(iter(body), "") if isinstance(body, dict) else ""
        names.append(("%s %s" % (verb, noun)).strip())
    shown = ", ".join(names[:limit])
    return shown + (" (+%d more)" % (len(names) - limit) if len(names) > limit else "")


class Nft:
    """One libnftables context (JSON in, JSON out).  Close it, or use it as a context manager."""

    def __init__(self, lib: t.Optional[t.Any] = None) -> None:
        self._lib = lib if lib is not None else load_library()
        self._ctx = self._lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not self._ctx:
            raise OSError(ctypes.get_errno() or 12, "nft_ctx_new failed")
        self._lib.nft_ctx_output_set_flags(self._ctx, NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE)
        self._lib.nft_ctx_buffer_output(self._ctx)
        self._lib.nft_ctx_buffer_error(self._ctx)

    def __enter__(self) -> "Nft":
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.close()

    def close(self) -> None:
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def _run(self, document: t.Union[str, t.Mapping[str, t.Any]]) -> t.Tuple[int, str, str]:
        if not self._ctx:
            raise ValueError("the nftables context is closed")
        text = document if isinstance(document, str) else json.dumps(document)
        status = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode("utf-8"))
        output = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode("utf-8", "replace")
        error = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode("utf-8", "replace")
        return status, output, error

    def apply(self, commands: t.Sequence[t.Mapping[str, t.Any]]) -> None:
        """Run the commands as one transaction: all of them take effect, or none and NftError."""
        if not commands:
            return
        status, _output, error = self._run({"nftables": list(commands)})
        if status != 0:
            raise NftError("nftables refused the transaction (%s), so none of it was applied: %s"
                           % (command_summary(commands), " ".join(error.split()) or "status %d" % status))

    def apply_text(self, text: str) -> None:
        """Run constant commands in nft's own language (never with user data in them), as one transaction."""
        status, _output, error = self._run(text)
        if status != 0:
            raise NftError("nftables refused %r: %s" % (text.splitlines()[0] if text else "", " ".join(error.split())))

    def list(self, what: t.Mapping[str, t.Any]) -> t.List[t.Dict[str, t.Any]]:
        """A ``list`` command's objects (metainfo left out), e.g. ``{"chains": None}``.

        Raises NftError when libnftables refuses, for instance a table that does not exist.
        """
        status, output, error = self._run({"nftables": [{"list": dict(what)}]})
        if status != 0:
            raise NftError("nftables could not list %s: %s" % (", ".join(what), " ".join(error.split())))
        try:
            document = json.loads(output) if output.strip() else {"nftables": []}
        except ValueError as exc:
            raise NftError("nftables answered with JSON that cannot be parsed: %s" % exc)
        return [item for item in document.get("nftables", []) if "metainfo" not in item]
