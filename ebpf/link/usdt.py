"""USDT probes: the static tracepoints of ``<sys/sdt.h>`` in user binaries.

A USDT probe is a ``nop`` in the binary plus a note in ``.note.stapsdt``
naming its provider, name, address, optional semaphore and the location of
each argument as an assembler operand (``-4@%eax``, ``8@-8(%rbp)``,
``4@$5``).  BPF programs use libbpf's ``<bpf/usdt.bpf.h>``::

    SEC("usdt")
    int BPF_USDT(on_query, int id, long size) { ... }

That header reads each argument through a ``struct __bpf_usdt_spec`` kept in
the program's ``__bpf_usdt_specs`` array map, at the index the BPF cookie of
the attachment names.  Attaching therefore means, for each location of the
probe: translate the argument strings into a spec, store it in the map at a
free index, and attach a uprobe (with the semaphore as its reference
counter) whose cookie is that index.  The user's cookie goes into the spec
and comes back from ``bpf_usdt_cookie()``.

The maps are found through the program itself (its map ids), so this works
for a program from a :class:`~ebpf.Collection` and for one loaded alone
whose instructions reference a ``__bpf_usdt_specs`` map the caller created
(an ``ARRAY`` of ``struct __bpf_usdt_spec``, 208 bytes per value).

Limits: argument specs are translated for x86-64 binaries; kernels without
BPF cookies on perf links (before 5.15) are refused rather than served
through ``__bpf_usdt_ip_to_spec_id``; spec indexes are allocated per map
within this process (two processes attaching USDT probes to the same pinned
program could pick the same free index).
"""

from __future__ import annotations

import enum
import errno as _errno
import re
import struct
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

from ..errors import EBPFError, InvalidObjectError, NotSupportedError
from ..info import program_info
from ..maps import map_from_id
from ..types import MapType, ProgramType
from ._link import Link, check_program_type, program_fd
from .perf_event import perf_link_supported
from .uprobe import EM_X86_64, ElfImage, Executable, _check_pid, _check_u64, attach_uprobe_offset

__all__ = [
    "USDTProbe",
    "USDTArg",
    "ArgType",
    "USDTLink",
    "ProbeNotFoundError",
    "attach_usdt",
    "read_probes",
    "parse_arg",
    "encode_spec",
    "SPEC_SIZE",
    "MAX_ARGS",
]

NT_STAPSDT = 3
MAX_ARGS = 12  # BPF_USDT_MAX_ARG_CNT
_ARG = struct.Struct("=QihBb")  # struct __bpf_usdt_arg_spec
_TAIL = struct.Struct("=Qh")  # usdt_cookie, arg_cnt
_KEY = struct.Struct("=I")  # an index into __bpf_usdt_specs
SPEC_SIZE = 208  # sizeof(struct __bpf_usdt_spec), 8-aligned

SPECS_MAP = "__bpf_usdt_specs"
# The kernel keeps 15 characters of a map name.
_SPECS_PREFIX = SPECS_MAP[:15]


class ProbeNotFoundError(EBPFError, ValueError):
    """The binary has no USDT probe ``provider:name``."""

    def __init__(self, provider: str, name: str, path: str, known: List[str]) -> None:
        more = ", ..." if len(known) > 20 else ""
        hint = f" (it has: {', '.join(known[:20])}{more})" if known else " (it has no USDT probes)"
        super().__init__(f"USDT probe {provider}:{name} not found in {path}{hint}", _errno.ENOENT)
        self.provider = provider
        self.name = name
        self.path = path


class ArgType(enum.IntEnum):
    """``enum __bpf_usdt_arg_type``."""

    CONST = 0
    REG = 1
    REG_DEREF = 2


@dataclass(frozen=True)
class USDTArg:
    """One parsed argument location, e.g. ``-8@16(%rbp)``.

    ``value`` is the constant (CONST) or the displacement (REG_DEREF).
    """

    text: str
    size: int
    signed: bool
    type: ArgType
    value: int = 0
    register: str = ""
    reg_offset: int = 0

    def encode(self) -> bytes:
        """This argument as ``struct __bpf_usdt_arg_spec``."""
        return _ARG.pack(self.value & 0xFFFFFFFFFFFFFFFF, int(self.type), self.reg_offset, int(self.signed),
                         64 - 8 * self.size)


@dataclass(frozen=True)
class USDTProbe:
    """One location of a USDT probe (a probe may have several).

    ``address`` and ``semaphore`` are virtual addresses as linked (adjusted
    for prelink); ``offset`` and ``semaphore_offset`` are the file offsets the
    kernel is given (``semaphore_offset`` is 0 when there is no semaphore).
    """

    provider: str
    name: str
    address: int
    base: int
    semaphore: int
    args: str
    offset: int
    semaphore_offset: int
    machine: int = EM_X86_64

    def arguments(self) -> List[USDTArg]:
        """The parsed argument locations (x86-64 only)."""
        parts = self.args.split()
        if len(parts) > MAX_ARGS:
            raise NotSupportedError(f"USDT probe {self.provider}:{self.name} with {len(parts)} arguments",
                                    detail=f"usdt.bpf.h handles at most {MAX_ARGS}")
        if parts and self.machine != EM_X86_64:
            raise NotSupportedError(f"USDT arguments of ELF machine {self.machine}",
                                    detail="argument specs are translated for x86-64 only")
        out = []
        for i, text in enumerate(parts):
            try:
                out.append(parse_arg(text))
            except ValueError as exc:
                raise InvalidObjectError(f"USDT probe {self.provider}:{self.name} argument #{i}: {exc}") from None
        return out


# --------------------------------------------------------------------------
# Notes


def read_probes(image: ElfImage) -> List[USDTProbe]:
    """Every USDT probe location in ``image``'s ``.note.stapsdt``."""
    data = image.stapsdt_notes
    e = image._e
    probes: List[USDTProbe] = []
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(e + "III", data, pos)
        pos += 12
        name = data[pos : pos + namesz]
        pos += (namesz + 3) & ~3
        desc = data[pos : pos + descsz]
        pos += (descsz + 3) & ~3
        if len(desc) < descsz:
            raise InvalidObjectError(f"{image.path}: truncated .note.stapsdt")
        if ntype != NT_STAPSDT or name.rstrip(b"\0") != b"stapsdt" or descsz < 24:
            continue
        pc, base, sema = struct.unpack_from(e + "QQQ", desc, 0)
        strings = desc[24:].split(b"\0")
        if len(strings) < 3:
            raise InvalidObjectError(f"{image.path}: malformed USDT note at {pc:#x}")
        provider, pname, args = (s.decode("utf-8", "replace") for s in strings[:3])
        # Prelink moves the image but not the note: .stapsdt.base's address
        # now minus the one recorded in the note is how far it moved.
        if image.stapsdt_base is not None and base:
            delta = image.stapsdt_base - base
            pc += delta
            if sema:
                sema += delta
        offset = image.file_offset(pc, executable=True)
        if offset is None:
            raise InvalidObjectError(f"{image.path}: USDT probe {provider}:{pname} at {pc:#x} is outside "
                                     "every executable segment")
        sema_off = 0
        if sema:
            found = image.file_offset(sema, executable=False)
            if found is None:
                raise InvalidObjectError(f"{image.path}: semaphore of USDT probe {provider}:{pname} at {sema:#x} "
                                         "is outside every loaded segment")
            sema_off = found
        probes.append(USDTProbe(provider, pname, pc, base, sema, args, offset, sema_off, image.machine))
    return probes


# --------------------------------------------------------------------------
# Argument specs (x86-64)

# offsetof(struct pt_regs, ...) in the kernel's x86-64 pt_regs, which is what
# a uprobe program's context points to.
_PT_REGS = {
    "r15": 0, "r14": 8, "r13": 16, "r12": 24, "bp": 32, "bx": 40, "r11": 48, "r10": 56,
    "r9": 64, "r8": 72, "ax": 80, "cx": 88, "dx": 96, "si": 104, "di": 112, "ip": 128, "sp": 152,
}


def _x86_registers() -> Dict[str, int]:
    regs: Dict[str, int] = {}
    for base in ("ax", "bx", "cx", "dx"):
        off = _PT_REGS[base]
        regs.update({"r" + base: off, "e" + base: off, base: off, base[0] + "l": off})
    for base in ("si", "di", "bp", "sp"):
        off = _PT_REGS[base]
        regs.update({"r" + base: off, "e" + base: off, base: off, base + "l": off})
    regs.update({"rip": 128, "eip": 128, "ip": 128})
    for n in range(8, 16):
        off = _PT_REGS[f"r{n}"]
        regs.update({f"r{n}": off, f"r{n}d": off, f"r{n}w": off, f"r{n}b": off})
    return regs


X86_64_REGISTERS = _x86_registers()

_NUM = r"[-+]?(?:0[xX][0-9a-fA-F]+|\d+)"
_CONST_RE = re.compile(rf"^({_NUM})@\$({_NUM})$")
_REG_RE = re.compile(rf"^({_NUM})@%(\w+)$")
_DEREF_RE = re.compile(rf"^({_NUM})@({_NUM})?\(%(\w+)\)$")


def _size(text: str, raw: str) -> Tuple[int, bool]:
    n = int(raw, 0)
    if abs(n) not in (1, 2, 4, 8):
        raise ValueError(f"{text!r}: size {n} is not 1, 2, 4 or 8")
    return abs(n), n < 0


def _register(text: str, name: str) -> int:
    off = X86_64_REGISTERS.get(name)
    if off is None:
        raise ValueError(f"{text!r}: unsupported register %{name}")
    return off


def parse_arg(text: str) -> USDTArg:
    """Parse one x86-64 USDT argument such as ``-4@%eax``, ``8@-8(%rbp)``,
    ``4@$5`` or ``-8@(%rdi)``.

    Raises ValueError for forms usdt.bpf.h cannot express (symbolic or
    RIP-relative-to-symbol operands, index registers).
    """
    m = _CONST_RE.match(text)
    if m:
        size, signed = _size(text, m.group(1))
        return USDTArg(text, size, signed, ArgType.CONST, value=int(m.group(2), 0))
    m = _REG_RE.match(text)
    if m:
        size, signed = _size(text, m.group(1))
        reg = m.group(2)
        return USDTArg(text, size, signed, ArgType.REG, register=reg, reg_offset=_register(text, reg))
    m = _DEREF_RE.match(text)
    if m:
        size, signed = _size(text, m.group(1))
        reg = m.group(3)
        return USDTArg(text, size, signed, ArgType.REG_DEREF, value=int(m.group(2) or "0", 0), register=reg,
                       reg_offset=_register(text, reg))
    raise ValueError(f"unsupported argument location {text!r}")


def encode_spec(args: List[USDTArg], cookie: int) -> bytes:
    """``struct __bpf_usdt_spec`` for these arguments and user cookie."""
    if len(args) > MAX_ARGS:
        raise ValueError(f"at most {MAX_ARGS} USDT arguments, not {len(args)}")
    body = b"".join(a.encode() for a in args) + bytes(_ARG.size * (MAX_ARGS - len(args)))
    raw = body + _TAIL.pack(cookie, len(args))
    return raw + bytes(SPEC_SIZE - len(raw))


# --------------------------------------------------------------------------
# Spec ids: indexes into a program's __bpf_usdt_specs, shared by every USDT
# link on programs that use that map.

_ids_lock = threading.Lock()
_ids_in_use: Dict[int, Set[int]] = {}  # map id -> indexes held by live links


def _allocate_ids(specs_map: Any, map_id: int, count: int) -> List[int]:
    """``count`` free indexes: not held in this process, and all-zero in the
    map (a non-zero slot belongs to someone else, e.g. libbpf)."""
    max_entries = specs_map.max_entries
    got: List[int] = []
    with _ids_lock:
        held = _ids_in_use.setdefault(map_id, set())
        for i in range(max_entries):
            if len(got) == count:
                break
            if i in held:
                continue
            raw = specs_map.lookup(struct.pack("=I", i))
            if any(raw):
                continue
            got.append(i)
        if len(got) < count:
            raise EBPFError(f"{SPECS_MAP} is full: {count} more USDT specs do not fit its {max_entries} entries "
                            "(define BPF_USDT_MAX_SPEC_CNT larger in the BPF program)", _errno.E2BIG)
        held.update(got)
    return got


def _release_ids(map_id: int, ids: List[int]) -> None:
    with _ids_lock:
        held = _ids_in_use.get(map_id)
        if held is not None:
            held.difference_update(ids)
            if not held:
                del _ids_in_use[map_id]


def _find_specs_map(prog: Any) -> Any:
    """Open the program's ``__bpf_usdt_specs`` map (by its map ids)."""
    info = prog.info() if hasattr(prog, "info") else None
    if info is None:
        info = program_info(program_fd(prog))
    found = None
    for mid in info.map_ids:
        try:
            m = map_from_id(mid)
        except EBPFError:
            continue
        try:
            name = m.info().name
        except EBPFError:
            m.close()
            continue
        if found is None and name.startswith(_SPECS_PREFIX) and int(m.type) == int(MapType.ARRAY):
            found = m
        else:
            m.close()
    if found is None:
        pname = getattr(prog, "name", "")
        raise InvalidObjectError(
            f"program {pname!r} has no {SPECS_MAP} map: USDT programs must use <bpf/usdt.bpf.h> "
            f"(SEC(\"usdt\") with BPF_USDT or bpf_usdt_arg); a program loaded alone must reference a "
            f"{SPECS_MAP} map passed in maps=", _errno.EINVAL)
    if found.value_size != SPEC_SIZE or found.key_size != 4:
        size = found.value_size
        found.close()
        raise InvalidObjectError(f"{SPECS_MAP} has {size}-byte values, expected {SPEC_SIZE} "
                                 "(struct __bpf_usdt_spec of a different usdt.bpf.h?)", _errno.EINVAL)
    return found


# --------------------------------------------------------------------------
# The link


class USDTLink(Link):
    """All uprobes of one USDT attachment, and the spec slots they use.

    Closing it detaches every location and frees the slots.  It cannot be
    pinned or updated: the specs live in the program's map and are only
    meaningful while this process holds the link.
    """

    def __init__(self, probes: List[USDTProbe], links: List[Link], specs_map: Any, map_id: int,
                 spec_ids: List[int], description: str) -> None:
        self._probes = list(probes)
        self._links = list(links)
        self._map = specs_map
        self._map_id = map_id
        self._spec_ids = list(spec_ids)
        self._description = description
        Link.__init__(self)

    @property
    def probes(self) -> List[USDTProbe]:
        """The probe locations attached."""
        return list(self._probes)

    @property
    def links(self) -> List[Link]:
        """The per-location uprobe links (owned by this link)."""
        self._check_open()
        return list(self._links)

    @property
    def spec_ids(self) -> List[int]:
        """Indexes of this link's specs in ``__bpf_usdt_specs``."""
        return list(self._spec_ids)

    # Kept on the class: the finalizer may run when module globals are gone.
    _release_ids = staticmethod(_release_ids)

    def _release(self, _key: Any = _KEY.pack) -> None:
        m, self._map = self._map, None
        links, self._links = self._links, []
        ids, self._spec_ids = self._spec_ids, []
        try:
            for link in links:
                link.close()
            # Zero the slots only after the probes are gone, so no program run
            # can see a half-cleared spec.
            empty = bytes(SPEC_SIZE)
            for i in ids:
                try:
                    m.update(_key(i), empty)
                except Exception:
                    pass
        finally:
            self._release_ids(self._map_id, ids)
            m.close()

    def pin(self, path: Any) -> None:
        raise NotSupportedError("pinning a USDT link", detail="its argument specs are allocated in this process; "
                                "pin the program's maps and links yourself")

    def info(self) -> Any:
        raise NotSupportedError("info of a USDT link", detail=f"it holds {len(self._links)} uprobe links; see .links")

    def __repr__(self) -> str:
        if self.closed:
            return "<USDTLink closed>"
        return f"<USDTLink {self._description} locations={len(self._links)} spec_ids={self._spec_ids}>"


def attach_usdt(executable: Any, provider: str, name: str, prog: Any, *, pid: Optional[int] = None,
                cookie: int = 0) -> USDTLink:
    """Attach ``prog`` to every location of USDT probe ``provider:name``.

    ``executable`` is an :class:`ebpf.link.Executable` (or a path).  The
    program must be a KPROBE-type program built with ``<bpf/usdt.bpf.h>``.
    Raises :class:`ProbeNotFoundError` when the binary has no such probe.
    """
    if not isinstance(executable, Executable):
        executable = Executable(executable)
    check_program_type(prog, frozenset({ProgramType.KPROBE}), "a USDT probe")
    prog_fd = program_fd(prog)
    pid_ = _check_pid(pid)
    _check_u64(cookie, "cookie")

    probes = [p for p in executable.usdt_probes() if p.provider == provider and p.name == name]
    if not probes:
        known = sorted({f"{p.provider}:{p.name}" for p in executable.usdt_probes()})
        raise ProbeNotFoundError(provider, name, executable.path, known)
    # Parse every location before touching the kernel.
    specs = [encode_spec(p.arguments(), cookie) for p in probes]
    if not perf_link_supported(prog_fd):
        raise NotSupportedError("USDT probes", min_kernel="5.15",
                                detail="usdt.bpf.h finds its argument specs through the BPF cookie of a perf link")

    specs_map = _find_specs_map(prog)
    links: List[Link] = []
    map_id = -1
    ids: List[int] = []
    try:
        map_id = specs_map.info().id
        # Locations with identical argument specs share one slot.
        unique: Dict[bytes, int] = {}
        for spec in specs:
            unique.setdefault(spec, len(unique))
        ids = _allocate_ids(specs_map, map_id, len(unique))
        for spec, k in unique.items():
            specs_map.update(struct.pack("=I", ids[k]), spec)
        for probe, spec in zip(probes, specs):
            spec_id = ids[unique[spec]]
            desc = f"usdt {executable.path}:{provider}:{name}@{probe.offset:#x}"
            links.append(attach_uprobe_offset(executable.path, probe.offset, prog, pid=pid, cookie=spec_id,
                                              ref_ctr_offset=probe.semaphore_offset, description=desc))
    except BaseException:
        for link in links:
            link.close()
        for i in ids:
            try:
                specs_map.update(struct.pack("=I", i), bytes(SPEC_SIZE))
            except EBPFError:
                pass
        if map_id >= 0:
            _release_ids(map_id, ids)
        specs_map.close()
        raise
    desc = f"{executable.path}:{provider}:{name}" + (f" pid={pid_}" if pid_ > 0 else "")
    return USDTLink(probes, links, specs_map, map_id, ids, desc)
