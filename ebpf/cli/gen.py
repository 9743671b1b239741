"""``ebpf gen OBJ [-o FILE] [--name NAME] [--embed] [--type C_TYPE]...``:
write a typed Python module (a skeleton) for a BPF object; see
:mod:`ebpf.gen`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

from . import fail

_DESCRIPTION = """\
Write a typed Python module for a BPF object: one class per struct, union and
enum its maps and globals use, an Objects class with a typed attribute per
map (TypedMap[K, V]), program and global, and load()/load_spec().  mypy and
pyright then check what a script does with them.  The same object always
gives the same module."""

_EPILOG = """\
example:
  python -m ebpf gen counter.o -o counter_skel.py --type event
  # in a script:
  import counter_skel as skel
  with skel.load(target_pid=1234) as objs:
      objs.stats[0] = skel.stats(count=1)
      objs.attach()"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "gen",
        help="write a typed Python module (skeleton) for a BPF object",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("object", metavar="OBJ", help="the BPF object (ELF, built with clang -g for BTF)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the module here (default: standard output)")
    p.add_argument(
        "--name",
        help="object name: the kernel names data-section maps NAME.bss etc. "
        "(default: OBJ's file name up to its first dot)",
    )
    p.add_argument(
        "--embed",
        action="store_true",
        help="put the object's bytes into the module (default: load() reads OBJ's file name next to the module)",
    )
    p.add_argument(
        "--type",
        dest="types",
        action="append",
        default=[],
        metavar="C_TYPE",
        help="also generate a class for this struct/union/enum/typedef, e.g. a ring buffer's event "
        "('event', 'struct event'); repeatable",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..gen import GenerateError, generate

    try:
        text = generate(args.object, name=args.name, embed=args.embed, types=args.types)
    except GenerateError as exc:
        raise fail(str(exc), "`ebpf btf dump OBJ` lists the object's types") from None
    if not args.output:
        sys.stdout.write(text)
        return 0
    _write(args.output, text)
    if not args.embed:
        beside = os.path.join(os.path.dirname(os.path.abspath(args.output)), os.path.basename(args.object))
        if not os.path.exists(beside):
            sys.stderr.write(
                f"note: load() reads {os.path.basename(args.object)} from the module's directory: "
                f"copy it there, pass load(path=...), or generate with --embed\n"
            )
    return 0


def _write(path: str, text: str) -> None:
    """Replace ``path`` in one step, and leave it alone when unchanged (build
    tools then see no new timestamp)."""
    data = text.encode()
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise fail(f"{path} is a directory") from None
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ebpf-gen-", suffix=".py", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)  # mkstemp makes 0600; a written file gets what open() would give
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
