"""``ebpf btf dump|list``: BTF of files, objects and the running kernel."""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from . import emit_json, fail
from ._common import add_json, table, type_by_spelling

if TYPE_CHECKING:
    from ..btf import types as T

KERNEL_BTF = "/sys/kernel/btf/vmlinux"

# What bpftool puts around ``btf dump ... format c``: a vmlinux.h that CO-RE
# programs include, every struct marked preserve_access_index.
C_HEADER = (
    "#ifndef __VMLINUX_H__\n#define __VMLINUX_H__\n\n"
    "#ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n"
    "#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)\n"
    "#endif\n\n"
)
C_FOOTER = (
    "#ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n#pragma clang attribute pop\n#endif\n\n"
    "#endif /* __VMLINUX_H__ */\n"
)


def register(sub: Any) -> None:
    p = sub.add_parser("btf", help="dump BTF (as C, text or JSON); list the kernel's BTF objects",
                       description="Dump BTF type information, or list the BTF objects the kernel holds.")
    cmds = p.add_subparsers(dest="btf_command", metavar="SUBCOMMAND")
    cmds.required = True

    d = cmds.add_parser(
        "dump", help="dump the types of a file, object or the running kernel",
        description="Dump BTF types.  --format c writes compilable C declarations in the order "
                    "bpftool's `btf dump ... format c` gives: from the running kernel (--kernel) that "
                    "is a vmlinux.h for CO-RE programs.  --format text is bpftool's raw format, one "
                    "type per line with its id.")
    src = d.add_mutually_exclusive_group(required=True)
    src.add_argument("file", metavar="FILE", nargs="?",
                     help="raw BTF (/sys/kernel/btf/*), a BPF object, or an executable embedding one")
    src.add_argument("--kernel", action="store_true", help=f"the running kernel's BTF ({KERNEL_BTF})")
    src.add_argument("--id", type=int, metavar="ID", help="the kernel's BTF object with this id (see `btf list`)")
    d.add_argument("--format", choices=("c", "text", "json"), default="text", help="output format (default text)")
    d.add_argument("--json", action="store_const", const="json", dest="format", help="same as --format json")
    d.add_argument("--type", action="append", metavar="NAME", dest="types",
                   help="only this type (C: with what it needs); 'struct NAME' etc. picks a kind; repeatable")
    d.add_argument("--base", metavar="FILE",
                   help="base BTF of a split blob (default: the kernel's, for /sys/kernel/btf/<module>)")
    d.set_defaults(func=run_dump)

    ls = cmds.add_parser("list", help="list the kernel's BTF objects",
                         description="List the BTF objects loaded in the kernel: vmlinux, modules, and "
                                     "the BTF of loaded programs and maps (needs CAP_SYS_ADMIN).")
    add_json(ls)
    ls.set_defaults(func=run_list)


# -- sources ---------------------------------------------------------------


class _Source:
    """Where the BTF comes from: a file libbpf can read, or raw bytes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.path: Optional[str] = None
        self.data: Optional[bytes] = None
        self.base_path: Optional[str] = args.base
        if args.kernel:
            self.path = KERNEL_BTF
            if not os.path.exists(KERNEL_BTF):
                raise fail(f"this kernel exports no BTF ({KERNEL_BTF} is missing)",
                           "kernels built with CONFIG_DEBUG_INFO_BTF=y have it")
        elif args.id is not None:
            self._from_id(args.id)
        else:
            self._from_file(args.file)

    def _from_file(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except FileNotFoundError:
            raise fail(f"{path}: no such file", "check the path") from None
        if head[:2] in (b"\x9f\xeb", b"\xeb\x9f"):  # raw BTF
            self.path = path
            if self.base_path is None and _is_module_btf(path):
                self.base_path = KERNEL_BTF
            return
        from ._common import read_object

        data, _ = read_object(path)
        self.data = data  # an ELF object: its .BTF section (load_spec fixes up data sections)

    def _from_id(self, btf_id: int) -> None:
        from ..ids import btf_info_from_id

        info = btf_info_from_id(btf_id)
        if info.kernel:
            self.path = os.path.join(os.path.dirname(KERNEL_BTF), info.name)
            if info.name != "vmlinux" and self.base_path is None:
                self.base_path = KERNEL_BTF
        else:
            from ..ids import btf_spec_from_id

            self.data = btf_spec_from_id(btf_id).raw

    def spec(self) -> Any:
        from ..btf import Spec, load_kernel_spec, load_spec

        base = None
        if self.base_path is not None:
            base = load_kernel_spec() if self.base_path == KERNEL_BTF else load_spec(self.base_path)
        if self.path == KERNEL_BTF:
            return load_kernel_spec()
        if self.path is not None:
            with open(self.path, "rb") as f:
                raw = f.read()
            return Spec.from_raw(raw, base, validate=not _is_module_btf(self.path))
        assert self.data is not None
        return load_spec(self.data, base) if base is not None else load_spec(self.data)


def _is_kernel_btf(path: str) -> bool:
    """A file the running kernel wrote (/sys/kernel/btf/*): trusted as is."""
    return os.path.dirname(os.path.abspath(path)) == os.path.dirname(KERNEL_BTF)


def _is_module_btf(path: str) -> bool:
    d, name = os.path.split(os.path.abspath(path))
    return d == os.path.dirname(KERNEL_BTF) and name != "vmlinux"


def _pick_types(spec: Any, names: List[str]) -> List[Any]:
    return [type_by_spelling(spec, name, "--type") for name in names]


# -- dump ------------------------------------------------------------------


def run_dump(args: argparse.Namespace) -> int:
    src = _Source(args)
    if args.format == "c":
        return _dump_c(src, args.types)
    spec = src.spec()
    types = _pick_types(spec, args.types) if args.types else list(spec)
    if args.format == "json":
        emit_json({"types": [type_record(spec, t) for t in types]})
        return 0
    out = sys.stdout
    for t in types:
        out.write(raw_text(spec, t) + "\n")
    return 0


def _dump_c(src: _Source, names: Optional[List[str]]) -> int:
    from .. import _libbpf

    data = src.data
    if data is not None:
        from ..btf import load_spec

        data = load_spec(data).raw
    trusted = all(p is None or _is_kernel_btf(p) for p in (src.path, src.base_path))
    ids = None
    if names or not trusted:
        # A file that is not the kernel's own is checked before libbpf reads
        # it (libbpf 1.1 crashes on some malformed BTF): src.spec() validates.
        spec = src.spec()
    if names:
        ids = [spec.type_id(t) for t in _pick_types(spec, names)]
    def dump(fd: int) -> None:
        _libbpf.dump_btf_c(fd, path=src.path if data is None else None, data=data, base_path=src.base_path,
                           type_ids=ids, header=C_HEADER, footer=C_FOOTER)

    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        fd = -1
    if fd >= 0:
        dump(fd)  # straight from libbpf's C stream
        return 0
    # stdout is no file (main() called with it redirected in-process)
    with tempfile.TemporaryFile() as f:
        dump(f.fileno())
        f.seek(0)
        sys.stdout.write(f.read().decode())
    return 0


# bpftool's names for kinds and encodings.
_KIND = {"int": "INT", "pointer": "PTR", "array": "ARRAY", "struct": "STRUCT", "union": "UNION",
         "enum": "ENUM", "enum64": "ENUM64", "fwd": "FWD", "typedef": "TYPEDEF", "volatile": "VOLATILE",
         "const": "CONST", "restrict": "RESTRICT", "func": "FUNC", "func_proto": "FUNC_PROTO",
         "var": "VAR", "datasec": "DATASEC", "float": "FLOAT", "decl_tag": "DECL_TAG", "type_tag": "TYPE_TAG"}
_INT_ENCODING = {0: "(none)", 1: "SIGNED", 2: "CHAR", 4: "BOOL"}
_FUNC_LINKAGE = {0: "static", 1: "global", 2: "extern"}
_VAR_LINKAGE = {0: "static", 1: "global", 2: "extern"}


def _kind(t: T.Type) -> str:
    from ..btf.types import Enum

    k = t.kind
    # One class holds both enum kinds; compilers use ENUM64 for values
    # that do not fit 32 bits.
    if isinstance(t, Enum) and any(not -(1 << 31) <= v.value < (1 << 32) for v in t.values):
        k = "enum64"
    return _KIND.get(k, k.upper())


def type_record(spec: Any, t: Any) -> Dict[str, Any]:
    """One type as a dict, with bpftool's JSON field names."""
    tid = spec.type_id
    kind = _kind(t)
    r: Dict[str, Any] = {"id": tid(t), "kind": kind, "name": t.name or "(anon)"}
    if kind == "INT":
        r.update(size=t.size, bits_offset=t.offset, nr_bits=t.bits, encoding=_INT_ENCODING.get(t.encoding, "UNKN"))
    elif kind == "PTR":
        r["type_id"] = tid(t.target)
    elif kind == "ARRAY":
        r.update(type_id=tid(t.type), index_type_id=tid(t.index_type), nr_elems=t.nelems)
    elif kind in ("STRUCT", "UNION"):
        members = []
        for m in t.members:
            e: Dict[str, Any] = {"name": m.name or "(anon)", "type_id": tid(m.type), "bits_offset": m.offset}
            if m.bitfield_size:
                e["bitfield_size"] = m.bitfield_size
            members.append(e)
        r.update(size=t.size, vlen=len(members), members=members)
    elif kind in ("ENUM", "ENUM64"):
        r.update(encoding="SIGNED" if t.signed else "UNSIGNED", size=t.size, vlen=len(t.values),
                 values=[{"name": v.name, "val": v.value} for v in t.values])
    elif kind == "FWD":
        r["fwd_kind"] = t.fwd_kind
    elif kind in ("TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG"):
        r["type_id"] = tid(t.type)
    elif kind == "FUNC":
        r.update(type_id=tid(t.type), linkage=_FUNC_LINKAGE.get(t.linkage, str(t.linkage)))
    elif kind == "FUNC_PROTO":
        params = [{"name": p.name or "(anon)", "type_id": tid(p.type)} for p in t.params]
        r.update(ret_type_id=tid(t.return_type), vlen=len(params), params=params)
    elif kind == "VAR":
        r.update(type_id=tid(t.type), linkage=_VAR_LINKAGE.get(t.linkage, str(t.linkage)))
    elif kind == "DATASEC":
        r.update(size=t.size, vlen=len(t.vars),
                 vars=[{"type_id": tid(v.type), "offset": v.offset, "size": v.size} for v in t.vars])
    elif kind == "FLOAT":
        r["size"] = t.size
    elif kind == "DECL_TAG":
        r.update(type_id=tid(t.type), component_idx=t.component_idx)
    return r


def raw_text(spec: Any, t: Any) -> str:
    """One type in bpftool's raw format (``btf dump file X``)."""
    r = type_record(spec, t)
    kind = r["kind"]
    head = f"[{r['id']}] {kind} '{r['name']}'"
    if kind == "INT":
        return f"{head} size={r['size']} bits_offset={r['bits_offset']} nr_bits={r['nr_bits']} encoding={r['encoding']}"
    if kind in ("PTR", "TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG"):
        return f"{head} type_id={r['type_id']}"
    if kind == "ARRAY":
        return f"{head} type_id={r['type_id']} index_type_id={r['index_type_id']} nr_elems={r['nr_elems']}"
    if kind in ("STRUCT", "UNION"):
        lines = [f"{head} size={r['size']} vlen={r['vlen']}"]
        for m in r["members"]:
            bits = f" bitfield_size={m['bitfield_size']}" if "bitfield_size" in m else ""
            lines.append(f"\t'{m['name']}' type_id={m['type_id']} bits_offset={m['bits_offset']}{bits}")
        return "\n".join(lines)
    if kind in ("ENUM", "ENUM64"):
        lines = [f"{head} encoding={r['encoding']} size={r['size']} vlen={r['vlen']}"]
        lines += [f"\t'{v['name']}' val={v['val']}" for v in r["values"]]
        return "\n".join(lines)
    if kind == "FWD":
        return f"{head} fwd_kind={r['fwd_kind']}"
    if kind == "FUNC":
        return f"{head} type_id={r['type_id']} linkage={r['linkage']}"
    if kind == "FUNC_PROTO":
        lines = [f"{head} ret_type_id={r['ret_type_id']} vlen={r['vlen']}"]
        lines += [f"\t'{p['name']}' type_id={p['type_id']}" for p in r["params"]]
        return "\n".join(lines)
    if kind == "VAR":
        return f"{head} type_id={r['type_id']}, linkage={r['linkage']}"
    if kind == "DATASEC":
        lines = [f"{head} size={r['size']} vlen={r['vlen']}"]
        lines += [f"\ttype_id={v['type_id']} offset={v['offset']} size={v['size']}" for v in r["vars"]]
        return "\n".join(lines)
    if kind == "FLOAT":
        return f"{head} size={r['size']}"
    if kind == "DECL_TAG":
        return f"{head} type_id={r['type_id']} component_idx={r['component_idx']}"
    return head


# -- list ------------------------------------------------------------------


def _users() -> Tuple[Dict[int, List[int]], Dict[int, List[int]]]:
    """BTF id -> ids of the programs, and of the maps, that carry it."""
    from ..errors import KeyNotExistError
    from ..ids import map_from_id, map_ids, program_from_id, program_ids

    progs: Dict[int, List[int]] = {}
    maps: Dict[int, List[int]] = {}
    for pid in program_ids():
        try:
            with program_from_id(pid) as p:
                info = p.info()
        except KeyNotExistError:
            continue  # unloaded meanwhile
        if info.btf_id:
            progs.setdefault(info.btf_id, []).append(pid)
    for mid in map_ids():
        try:
            with map_from_id(mid) as m:
                minfo = m.info()
        except KeyNotExistError:
            continue
        if minfo.btf_id:
            maps.setdefault(minfo.btf_id, []).append(mid)
    return progs, maps


def run_list(args: argparse.Namespace) -> int:
    from ..errors import KeyNotExistError
    from ..ids import btf_ids, btf_info_from_id

    progs, maps = _users()
    rows: List[Dict[str, Any]] = []
    for bid in btf_ids():
        try:
            info = btf_info_from_id(bid)
        except KeyNotExistError:
            continue
        rows.append({"id": bid, "name": info.name, "size": info.size, "kernel": info.kernel,
                     "prog_ids": progs.get(bid, []), "map_ids": maps.get(bid, [])})
    if args.json:
        emit_json(rows)
        return 0
    table([(r["id"], r["name"] or "<anon>", r["size"], "kernel" if r["kernel"] else "user",
            ",".join(map(str, r["prog_ids"])), ",".join(map(str, r["map_ids"]))) for r in rows],
          ("ID", "NAME", "SIZE", "ORIGIN", "PROGRAMS", "MAPS"))
    return 0
