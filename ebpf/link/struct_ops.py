"""struct_ops: register a kernel ops table (e.g. a TCP congestion control)
whose functions are BPF programs.

A ``SEC(".struct_ops")`` variable becomes a ``STRUCT_OPS`` map and its
function members become ``STRUCT_OPS`` programs.  Registering means writing
the kernel's value (``struct bpf_struct_ops_<name>``: the ops struct with
program fds in its function slots and the variable's other fields) into the
map.  libbpf 1.1.2 builds that value only inside
``bpf_map__attach_struct_ops``, on a ``bpf_object`` that
:class:`ebpf.Collection` has closed by then, so this module builds it from
the collection spec: the variable's bytes and relocations (which program
fills which slot) from the ELF, the member layout from the object's and the
kernel's BTF.  The collection records that plan on the map at load
(:func:`bind_struct_ops`).

Maps created with ``BPF_F_LINK`` (``MapFlags.LINK``, kernel 6.4+; set it on
the MapSpec before loading) register through a ``bpf_link`` that can be
pinned and closed; others register when the value is written and unregister
when :class:`StructOpsLink` deletes it again (a map registers only once).
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .. import _libbpf, _loader, _syscall
from ..errors import ClosedError, EBPFError, NotSupportedError
from ..info import map_info
from ..types import AttachType, MapFlags, MapType
from ._link import FDLink, Link, LinkInfo, LinkType

__all__ = ["attach_struct_ops", "StructOpsLink", "bind_struct_ops"]

_STRUCT_OPS_SECTIONS = (".struct_ops", ".struct_ops.link")


@dataclass
class _Member:
    name: str
    offset: int  # bytes, in the local (ELF) struct
    size: int
    is_func: bool


@dataclass
class StructOpsPlan:
    """What a struct_ops map needs at attach time (kept on the Map)."""

    type_name: str  # e.g. "tcp_congestion_ops"
    image: bytes  # the variable's bytes in the ELF
    members: List[_Member] = field(default_factory=list)
    programs: Dict[str, Any] = field(default_factory=dict)  # member name -> Program
    missing: Dict[str, str] = field(default_factory=dict)  # member name -> program not loaded
    error: str = ""  # why no plan could be made


def bind_struct_ops(spec: Any, coll: Any) -> None:
    """Record a :class:`StructOpsPlan` on each STRUCT_OPS map of ``coll``.

    Called by :class:`ebpf.Collection` after loading; never raises (a
    failure is kept in the plan and reported by :func:`attach_struct_ops`).
    """
    for key, m in coll.maps.items():
        ms = spec.maps.get(key)
        if ms is None or int(ms.type) != int(MapType.STRUCT_OPS):
            continue
        try:
            plan = _plan(spec, key)
        except Exception as exc:  # reported at attach time
            plan = StructOpsPlan("", b"", error=str(exc))
        else:
            for member, prog_name in list(plan.programs.items()):
                prog = coll.programs.get(prog_name)
                if prog is None:
                    plan.missing[member] = prog_name
                    del plan.programs[member]
                else:
                    plan.programs[member] = prog
        m._struct_ops = plan


def _plan(spec: Any, key: str) -> StructOpsPlan:
    from .. import btf  # a lazily loaded subpackage

    elf = _loader.elf_of(spec)
    if elf is None or spec.types is None:
        raise EBPFError("struct_ops map without an ELF object and its BTF", errno.EINVAL)
    elf_name = _loader.elf_map_name(spec, key)
    for sec_name in _STRUCT_OPS_SECTIONS:
        sec = elf.section_by_name(sec_name)
        if sec is None:
            continue
        sym = next((s for s in elf.symbols if s.name == elf_name and s.shndx == sec.index), None)
        if sym is not None:
            break
    else:
        raise EBPFError(f"struct_ops variable {elf_name!r} not found in the ELF", errno.ENOENT)
    image = sec.data[sym.value : sym.value + sym.size]

    datasec = spec.types.type_by_name(sec_name, kind=btf.Datasec)
    var = next((v for v in datasec.vars if v.type.name == elf_name), None)
    if var is None:
        raise EBPFError(f"struct_ops variable {elf_name!r} has no BTF", errno.ENOENT)
    st = btf.underlying(var.type.type)
    if not isinstance(st, btf.Struct):
        raise EBPFError(f"struct_ops variable {elf_name!r} is not a struct", errno.EINVAL)
    members = []
    for mb in st.members:
        if mb.bitfield_size or mb.offset % 8:
            raise EBPFError(f"struct_ops {st.name}.{mb.name}: bitfields are not supported", errno.EINVAL)
        mt = btf.underlying(mb.type)
        is_func = isinstance(mt, btf.Pointer) and isinstance(btf.underlying(mt.target), btf.FuncProto)
        members.append(_Member(mb.name, mb.offset // 8, btf.sizeof(mb.type), is_func))

    # Which program fills which function slot: the relocations against the
    # variable, each naming a function in a struct_ops/ program section.
    funcs = {(s.shndx, s.value): s.name for s in elf.symbols if s.type == 2}  # STT_FUNC
    by_offset = {m.offset: m for m in members}
    programs: Dict[str, str] = {}
    for rel in elf.relocations(sec):
        if not sym.value <= rel.offset < sym.value + sym.size:
            continue
        m = by_offset.get(rel.offset - sym.value)
        target = rel.symbol
        name = target.name if target.type == 2 else funcs.get((target.shndx, target.value))
        if m is None or not m.is_func or name is None:
            raise EBPFError(f"struct_ops {elf_name}: relocation at +{rel.offset - sym.value} is not a function slot",
                            errno.EINVAL)
        programs[m.name] = name
    return StructOpsPlan(st.name, bytes(image), members, programs)


# --------------------------------------------------------------------------


def _map_value_type_id(map_fd: int) -> int:
    return int(_syscall.map_info(map_fd).btf_vmlinux_value_type_id)


def _kernel_value(plan: StructOpsPlan, map_fd: int, value_size: int) -> bytes:
    """The ``bpf_struct_ops_<name>`` value: local fields copied by name,
    program fds in the function slots."""
    from .. import btf  # a lazily loaded subpackage

    kernel = btf.load_kernel_spec()
    vt: Any = None
    try:
        vt = kernel.type_by_id(_map_value_type_id(map_fd))
    except Exception:
        vt = None
    if not isinstance(vt, btf.Struct):
        try:
            vt = kernel.type_by_name(f"bpf_struct_ops_{plan.type_name}", kind=btf.Struct)
        except Exception:
            raise NotSupportedError(f"struct_ops {plan.type_name}", detail="the kernel has no such struct_ops type "
                                    "(it may live in a module, which is not supported)") from None
    data = vt.member("data")
    kst = btf.underlying(data.type)
    if not isinstance(kst, btf.Struct):
        raise NotSupportedError(f"struct_ops {plan.type_name}", detail=f"unexpected kernel value type {vt.name}")
    base = data.offset // 8
    value = bytearray(value_size)
    for m in plan.members:
        try:
            km = kst.member(m.name)
        except KeyError:
            raise EBPFError(f"struct_ops {plan.type_name}: the kernel's struct has no member {m.name!r}",
                            errno.EINVAL) from None
        koff = base + km.offset // 8
        if m.is_func:
            prog = plan.programs.get(m.name)
            if prog is None:
                if m.name in plan.missing:
                    raise EBPFError(f"struct_ops {plan.type_name}.{m.name}: program {plan.missing[m.name]!r} "
                                    "was not loaded with the map", errno.ENOENT)
                continue
            try:
                fd = prog.fd
            except ClosedError:
                what = f"program {getattr(prog, 'name', '?')} of struct_ops {plan.type_name}.{m.name}"
                raise ClosedError(what) from None
            value[koff : koff + 8] = fd.to_bytes(8, sys.byteorder)
            continue
        chunk = plan.image[m.offset : m.offset + m.size]
        if not any(chunk):
            continue
        ksize = btf.sizeof(km.type)
        if ksize != m.size:
            raise EBPFError(f"struct_ops {plan.type_name}.{m.name}: {m.size} bytes in the object, {ksize} in the "
                            f"kernel", errno.EINVAL)
        value[koff : koff + m.size] = chunk
    return bytes(value)


def attach_struct_ops(map: Any) -> Link:
    """Register the struct_ops ``map`` (from an :class:`ebpf.Collection`).

    Returns an :class:`FDLink` for maps created with ``MapFlags.LINK`` and a
    :class:`StructOpsLink` otherwise; closing either unregisters the ops.
    """
    plan: Optional[StructOpsPlan] = getattr(map, "_struct_ops", None)
    if int(getattr(map, "type", -1)) != int(MapType.STRUCT_OPS):
        raise EBPFError(f"attach_struct_ops: map {getattr(map, 'name', map)!r} is not a STRUCT_OPS map", errno.EINVAL)
    map_fd = map.fd  # ClosedError for a closed map
    if plan is None:
        raise NotSupportedError(
            "attach_struct_ops on this map",
            detail="the struct_ops value is built from the object's ELF; load the map through ebpf.Collection",
        )
    if plan.error:
        raise EBPFError(f"attach_struct_ops: cannot build the value of {map.name}: {plan.error}", errno.EINVAL)
    value = _kernel_value(plan, map_fd, int(map.value_size))
    linked = bool(int(map.flags) & int(MapFlags.LINK))
    ret = _libbpf.struct_ops_register(map_fd, value)
    # A BPF_F_LINK map keeps its value (state READY) after its link closed:
    # EBUSY then only means it can be linked again.
    if ret < 0 and not (linked and -ret == errno.EBUSY):
        err = -ret
        if err == errno.EBUSY:
            raise EBPFError(f"attach_struct_ops: {map.name} is registered already (or was, and a struct_ops map "
                            "without MapFlags.LINK registers only once)", err)
        if err == errno.EEXIST:
            raise EBPFError(f"attach_struct_ops: the kernel already has a {plan.type_name} with this name", err)
        raise _libbpf.errno_error(err, f"attach_struct_ops: writing the value of {map.name}")
    if linked:
        try:
            fd = _libbpf.link_create(map_fd, 0, int(AttachType.STRUCT_OPS))
        except EBPFError as exc:
            if exc.errno == errno.EEXIST:
                raise EBPFError(f"attach_struct_ops: the kernel already has a {plan.type_name} with this name",
                                exc.errno) from None
            raise
        return FDLink(fd, f"struct_ops {map.name}")
    return StructOpsLink(map_fd, map.name, plan.type_name)


class StructOpsLink(Link):
    """A struct_ops map registered by writing its value (no ``BPF_F_LINK``).

    ``close()`` unregisters by deleting the value.  It cannot be pinned or
    updated; ``info()`` is assembled here (``id`` 0).
    """

    _kind = "struct_ops registration"

    def __init__(self, map_fd: int, name: str, type_name: str) -> None:
        self._fd = os.dup(map_fd)
        self._name = name
        self._type_name = type_name
        self._unregister = _libbpf.struct_ops_unregister  # bound: the finalizer may run at shutdown
        Link.__init__(self)

    def _release(self, _close: Any = os.close, _ENOENT: int = errno.ENOENT) -> None:
        fd, self._fd = self._fd, -1
        try:
            ret = self._unregister(fd)
            if ret < 0 and -ret != _ENOENT:
                raise _libbpf.errno_error(-ret, f"unregistering struct_ops {self._name}")
        finally:
            _close(fd)

    def info(self) -> LinkInfo:
        with self._handle_lock:
            self._check_open()
            map_id = map_info(self._fd).id
        return LinkInfo(type=LinkType.STRUCT_OPS, id=0, program_id=0, extra={"map_id": map_id})

    def __repr__(self) -> str:
        return "<StructOpsLink closed>" if self.closed else f"<StructOpsLink {self._name} ({self._type_name})>"
