"""The command line: ``python -m ebpf`` (and the ``ebpf`` console script).

Each subcommand lives in a module of its own in this package, named in
:data:`COMMANDS`; a module provides ``register(subparsers)``, which adds its
parser and sets ``func`` (``func(args) -> int``) as the parser's default.
Adding a command is adding a module and a line to :data:`COMMANDS`.

Conventions every command keeps:

- ``--help`` everywhere; ``--json`` wherever the output is data (one JSON
  document, or JSON lines for a stream), printed with :func:`emit_json`.
- Exit status 0 on success, 1 on failure, 2 on a usage error (argparse's).
- A failure is one line on stderr: ``ebpf <command>: <ErrorType>: <message>``,
  and a hint where one helps (:func:`fail`); no traceback unless
  ``EBPF_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, Callable, List, Optional, Sequence

__all__ = ["main", "COMMANDS", "CommandError", "emit_json", "fail"]

# Subcommand modules, in the order --help lists them.
COMMANDS: Sequence[str] = ("inspect", "disasm", "btf", "prog", "map", "link", "features", "run", "gen")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A failure a command reports as one line, with an optional hint."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def fail(message: str, hint: str = "") -> "CommandError":
    """Build the error a command raises to end with exit status 1."""
    return CommandError(message, hint)


def emit_json(doc: Any, stream: Any = None) -> None:
    """Print one JSON document (one line: JSON lines for streams)."""
    import json

    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(doc, separators=(",", ":"), default=_json_default) + "\n")
    out.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if hasattr(value, "_asdict"):
        return value._asdict()
    if hasattr(value, "__dict__"):
        return {k: v for k, v in vars(value).items() if not k.startswith("_")}
    if hasattr(value, "__slots__"):
        return {k: getattr(value, k) for k in value.__slots__ if not k.startswith("_")}
    return str(value)


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The parser; with ``argv`` naming a command, only that command's
    module is imported (a command line pays for what it runs)."""
    parser = argparse.ArgumentParser(
        prog="ebpf",
        description="Look at BPF objects and the running kernel, and run BPF programs without writing user space.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="show libbpf's messages (-vv: its debug output too)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    first = next((a for a in argv or () if not a.startswith("-")), None)
    for name in (first,) if first in COMMANDS else COMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue  # a command not written yet
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    _route_libbpf_log(args.verbose)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or EXIT_OK)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ebpf ... | head`: the reader went away; not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except Exception as exc:  # one line per failure, typed
        if os.environ.get("EBPF_DEBUG") == "1":
            raise
        sub = getattr(args, f"{args.command}_command", None)
        _report(f"{args.command} {sub}" if sub else args.command, exc)
        return EXIT_FAILURE


def _route_libbpf_log(verbose: int) -> None:
    """libbpf's messages go to the ``ebpf.libbpf`` logger (silent by
    default); a failure is reported once as our own line, with libbpf's last
    warning in it, so they are shown only when asked for."""
    if not verbose:
        return
    import logging

    lg = logging.getLogger("ebpf")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    lg.addHandler(handler)
    lg.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)


def _report(command: str, exc: BaseException) -> None:
    if isinstance(exc, CommandError):
        line = f"ebpf {command}: {exc}"
        hint = exc.hint
    else:
        line = f"ebpf {command}: {type(exc).__name__}: {exc}"
        hint = _hint_for(exc)
    first, _, _ = line.partition("\n")
    sys.stderr.write(first + "\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")


def _hint_for(exc: BaseException) -> str:
    from ..errors import KernelPolicyError, NotSupportedError, PermissionDeniedError, VerifierError

    if isinstance(exc, KernelPolicyError):
        return "this kernel refuses it by policy (lockdown or an LSM); `ebpf features` shows what it allows"
    if isinstance(exc, PermissionDeniedError):
        return "run as root, or with CAP_BPF (plus CAP_PERFMON or CAP_NET_ADMIN for some program types)"
    if isinstance(exc, NotSupportedError):
        return "`ebpf features` shows what this kernel and libbpf support"
    if isinstance(exc, VerifierError):
        return "the whole verifier log is in the error's log; EBPF_DEBUG=1 shows the traceback"
    if isinstance(exc, FileNotFoundError):
        return "check the path"
    return ""
