"""Uprobes and uretprobes: programs on functions of user-space binaries.

Open the binary (an executable or a shared library) with
:func:`open_executable`, then attach a ``SEC("uprobe")`` /
``SEC("uretprobe")`` program to one of its functions::

    exe = ebpf.link.open_executable("/usr/bin/bash")
    with exe.uprobe("readline", coll.programs["on_readline"]):
        ...

Like cilium/ebpf, the library reads the symbol tables (``.symtab`` and
``.dynsym``) of the file itself and hands the kernel a *file offset*: the
symbol's virtual address mapped through the ``PT_LOAD`` segment that holds it
(``offset = value - p_vaddr + p_offset``), so PIE and non-PIE executables and
shared libraries all work.  The probe is a perf event of the ``uprobe`` PMU
(kernel 4.17+) attached with a ``bpf_link`` (5.15+, carries a BPF cookie) or
the older perf ioctl.  It fires in every process that maps the file, or only
in process ``pid``.

USDT probes (``<sys/sdt.h>``) are attached with :meth:`Executable.usdt`; see
:mod:`ebpf.link.usdt`.
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
import platform
import shutil
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from ..errors import ENOTSUPP, EBPFError, InvalidObjectError, NotSupportedError, PermissionDeniedError
from ..types import ProgramType
from ._link import Link, check_program_type, program_fd
from .perf_event import (
    attach_owned_perf_fd,
    open_perf_fd,
    perf_event_attr,
    pmu_retprobe_bit,
    pmu_type,
)

# usdt and uprobe_multi import this module: the methods below import them
# when first used.
if TYPE_CHECKING:
    from .usdt import USDTProbe

__all__ = [
    "Executable",
    "open_executable",
    "SymbolNotFoundError",
    "ExecutableNotFoundError",
    "ProcessNotFoundError",
    "open_uprobe_event",
]

# PERF_UPROBE_REF_CTR_OFFSET_SHIFT: the semaphore offset rides in config's high half.
REF_CTR_OFFSET_SHIFT = 32
_UPROBE_PMU = "uprobe"
_UPROBE_PROGRAM_TYPES = frozenset({ProgramType.KPROBE})


class SymbolNotFoundError(EBPFError, ValueError):
    """The binary has no function of that name (or only imports it).

    ``symbol`` and ``path`` say what was looked for where; ``imported`` is
    True when the binary references the symbol but another object defines it.
    """

    def __init__(self, symbol: str, path: str, imported: bool = False) -> None:
        if imported:
            msg = (f"symbol {symbol!r} is imported by {path}, not defined there (its value is 0 until the "
                   f"dynamic linker binds it): attach to the shared library that defines it instead")
        else:
            msg = f"symbol {symbol!r} not found in {path} (no such function in .symtab or .dynsym)"
        super().__init__(msg, _errno.ENOENT)
        self.symbol = symbol
        self.path = path
        self.imported = imported


class ExecutableNotFoundError(EBPFError, FileNotFoundError):
    """The binary to probe does not exist."""

    def __init__(self, message: str) -> None:
        EBPFError.__init__(self, message, _errno.ENOENT)


class ProcessNotFoundError(EBPFError, ProcessLookupError):
    """A ``pid`` filter named a process that does not exist."""

    def __init__(self, pid: int) -> None:
        EBPFError.__init__(self, f"no process with pid {pid}", _errno.ESRCH)
        self.pid = pid


# --------------------------------------------------------------------------
# A small reader for the ELF executables and shared objects we probe.  It is
# separate from ebpf._elf, which only accepts BPF relocatable objects.

ET_EXEC, ET_DYN = 2, 3
PT_LOAD = 1
PF_X = 1
SHT_SYMTAB, SHT_DYNSYM, SHT_NOTE = 2, 11, 7
STT_FUNC = 2
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
SHN_UNDEF = 0
EM_X86_64 = 62


class Segment(NamedTuple):
    """One ``PT_LOAD`` program header."""

    offset: int
    vaddr: int
    filesz: int
    memsz: int
    flags: int


class SectionHeader(NamedTuple):
    name: str
    type: int
    addr: int
    offset: int
    size: int
    link: int


@dataclass(frozen=True)
class FunctionSymbol:
    """A function defined in the binary."""

    name: str
    value: int  # virtual address as linked
    size: int
    bind: int


class ElfImage:
    """Headers, segments, function symbols and notes of an ELF binary.

    The file is read once (memory-mapped) and closed; every offset read from
    it is bounds-checked, and a malformed file raises InvalidObjectError.
    """

    type: int  # e_type: ET_EXEC or ET_DYN
    machine: int  # e_machine

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise InvalidObjectError(f"{path} is empty, not an ELF file")
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    self._parse(mm, size)
        except FileNotFoundError:
            raise ExecutableNotFoundError(f"no such file: {path}") from None
        except IsADirectoryError:
            raise InvalidObjectError(f"{path} is a directory, not an executable", _errno.EISDIR) from None
        except PermissionError as exc:
            raise PermissionDeniedError(f"cannot read {path}: {exc.strerror}", exc.errno) from None

    def _fail(self, what: str) -> InvalidObjectError:
        return InvalidObjectError(f"{self.path}: malformed ELF file: {what}")

    def _parse(self, data: Any, size: int) -> None:
        if size < 64 or data[:4] != b"\x7fELF":
            raise InvalidObjectError(f"{self.path} is not an ELF file")
        if data[4] != 2:
            raise InvalidObjectError(f"{self.path}: only 64-bit ELF files are supported (class {data[4]})")
        if data[5] not in (1, 2):
            raise self._fail(f"unknown byte order {data[5]}")
        e = "<" if data[5] == 1 else ">"
        self.byteorder = "little" if e == "<" else "big"
        (self.type, self.machine, _v, _entry, phoff, shoff, _flags, _ehsize,
         phentsize, phnum, shentsize, shnum, shstrndx) = struct.unpack_from(e + "HHIQQQIHHHHHH", data, 16)
        if self.type not in (ET_EXEC, ET_DYN):
            raise InvalidObjectError(f"{self.path} is not an executable or a shared object (ELF type {self.type})")

        self.segments: List[Segment] = []
        if phnum:
            if phentsize < 56 or phoff + phnum * phentsize > size:
                raise self._fail("program header table out of bounds")
            for i in range(phnum):
                p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, _align = struct.unpack_from(
                    e + "IIQQQQQQ", data, phoff + i * phentsize)
                if p_type == PT_LOAD:
                    self.segments.append(Segment(p_offset, p_vaddr, p_filesz, p_memsz, p_flags))

        self.sections: Dict[str, SectionHeader] = {}
        headers: List[Tuple[int, ...]] = []
        if shoff and shnum:
            if shentsize < 64 or shoff + shnum * shentsize > size:
                raise self._fail("section header table out of bounds")
            headers = [struct.unpack_from(e + "IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
            if shstrndx >= shnum:
                raise self._fail(f"section name table index {shstrndx} out of range")
            names = self._bytes(data, size, headers[shstrndx][4], headers[shstrndx][5], "section name table")
            for (name_off, typ, _fl, addr, off, sz, link, _info, _al, _es) in headers:
                sec = SectionHeader(_cstr(names, name_off), typ, addr, off, sz, link)
                self.sections.setdefault(sec.name, sec)

        # Function symbols: defined ones by name, plus the names only imported.
        self.functions: Dict[str, FunctionSymbol] = {}
        self.imported: Set[str] = set()
        rank = {STB_GLOBAL: 2, STB_WEAK: 1}
        for hdr in headers:
            if hdr[1] not in (SHT_SYMTAB, SHT_DYNSYM):
                continue
            if hdr[6] >= len(headers):
                raise self._fail("symbol table links to a missing string table")
            strtab = self._bytes(data, size, headers[hdr[6]][4], headers[hdr[6]][5], "symbol string table")
            raw = self._bytes(data, size, hdr[4], hdr[5], "symbol table")
            entries = struct.iter_unpack(e + "IBBHQQ", raw[: len(raw) // 24 * 24])
            for name_off, info, _other, shndx, value, sz in entries:
                if info & 0xF != STT_FUNC or not name_off:
                    continue
                name = _cstr(strtab, name_off)
                if shndx == SHN_UNDEF:
                    self.imported.add(name)
                    continue
                sym = FunctionSymbol(name, value, sz, info >> 4)
                old = self.functions.get(name)
                # Prefer a global definition over a weak or local one.
                if old is None or rank.get(sym.bind, 0) > rank.get(old.bind, 0):
                    self.functions[name] = sym

        self.stapsdt_notes = b""
        self.stapsdt_base: Optional[int] = None
        notes = self.sections.get(".note.stapsdt")
        if notes is not None and notes.type == SHT_NOTE:
            self.stapsdt_notes = self._bytes(data, size, notes.offset, notes.size, ".note.stapsdt")
        base = self.sections.get(".stapsdt.base")
        if base is not None:
            self.stapsdt_base = base.addr
        self._e = e

    def _bytes(self, data: Any, size: int, offset: int, length: int, what: str) -> bytes:
        if offset + length > size:
            raise self._fail(f"{what} extends past the end of the file")
        return bytes(data[offset : offset + length])

    def file_offset(self, vaddr: int, executable: bool = True) -> Optional[int]:
        """The file offset that ``vaddr`` is loaded from, or None.

        ``executable`` restricts the search to segments mapped executable
        (where code lives); otherwise any loaded segment counts (semaphores
        live in a writable data segment).
        """
        for seg in self.segments:
            if executable and not seg.flags & PF_X:
                continue
            if seg.vaddr <= vaddr < seg.vaddr + max(seg.memsz, seg.filesz):
                return vaddr - seg.vaddr + seg.offset
        return None


def _cstr(table: bytes, offset: int) -> str:
    if offset >= len(table):
        return ""
    end = table.find(b"\0", offset)
    return table[offset : end if end >= 0 else len(table)].decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------
# Finding the binary


def _library_dirs() -> List[str]:
    machine = platform.machine()
    triplet = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "ppc64le": "powerpc64le-linux-gnu",
               "s390x": "s390x-linux-gnu", "riscv64": "riscv64-linux-gnu"}.get(machine, f"{machine}-linux-gnu")
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    dirs += [f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib64", "/usr/lib64", "/lib", "/usr/lib",
             "/usr/local/lib"]
    return dirs


def resolve_path(path: "os.PathLike[str] | str") -> str:
    """An absolute path for ``path``.

    A bare name (no ``/``) is looked up like a library in ``LD_LIBRARY_PATH``
    and the standard library directories (e.g. ``"libc.so.6"``), then in
    ``PATH`` (e.g. ``"bash"``).  ``/etc/ld.so.cache`` is not consulted.
    """
    p = os.fspath(path)
    if not p:
        raise ValueError("path of the executable cannot be empty")
    if "/" in p:
        if not os.path.exists(p):
            raise ExecutableNotFoundError(f"no such file: {p}")
        return os.path.abspath(p)
    for d in _library_dirs():
        cand = os.path.join(d, p)
        if os.path.isfile(cand):
            return os.path.abspath(cand)
    found = shutil.which(p)
    if found:
        return os.path.abspath(found)
    raise ExecutableNotFoundError(f"{p} not found in the library directories or PATH (give a path to the file)")


# --------------------------------------------------------------------------
# The perf event


def _check_pid(pid: Optional[int]) -> int:
    if pid is None:
        return -1
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"pid must be a positive process id or None (all processes), not {pid!r}")
    return pid


def _check_u64(value: int, what: str, bits: int = 64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ValueError(f"{what} must be an integer in [0, 2**{bits}), not {value!r}")
    return value


def open_uprobe_event(path: str, offset: int, *, pid: int = -1, retprobe: bool = False,
                      ref_ctr_offset: int = 0, what: str = "uprobe") -> int:
    """Open a perf event of the ``uprobe`` PMU at file ``offset`` of ``path``.

    Returns the (close-on-exec) fd, which the caller owns.  ``ref_ctr_offset``
    is the file offset of a USDT semaphore the kernel counts up while the
    probe exists.
    """
    try:
        ptype = pmu_type(_UPROBE_PMU)
    except FileNotFoundError:
        raise NotSupportedError("the uprobe PMU", min_kernel="4.17",
                                detail="/sys/bus/event_source/devices/uprobe is missing") from None
    config = 0
    if retprobe:
        try:
            config |= 1 << pmu_retprobe_bit(_UPROBE_PMU)
        except (OSError, ValueError):
            raise NotSupportedError("uretprobes through the uprobe PMU", min_kernel="4.17",
                                    detail="the PMU has no retprobe format bit") from None
    if ref_ctr_offset:
        if not os.path.exists(f"/sys/bus/event_source/devices/{_UPROBE_PMU}/format/ref_ctr_offset"):
            raise NotSupportedError("uprobe semaphores (ref_ctr_offset)", min_kernel="4.20")
        config |= ref_ctr_offset << REF_CTR_OFFSET_SHIFT
    attr = perf_event_attr(type=ptype, config=config)
    attr.set_probe(os.fsencode(path), offset)  # uprobe_path, probe_offset
    # A probe on all processes must name a CPU (it still fires on every CPU);
    # one for a single process names none.
    cpu = 0 if pid == -1 else -1
    try:
        return open_perf_fd(attr, pid, cpu, what=what)
    except EBPFError as exc:
        err = exc.errno
        if err == _errno.ESRCH:
            raise ProcessNotFoundError(pid) from None
        if err == _errno.ENOENT:
            raise ExecutableNotFoundError(f"{what}: {path} disappeared") from None
        if err == _errno.EINVAL:
            why = "an offset past the end of the file"
            if ref_ctr_offset:
                why += ", or a semaphore offset that differs from another probe's at the same place"
            raise InvalidObjectError(f"{what}: the kernel refused offset {offset:#x} of {path} (EINVAL: {why})",
                                     err) from None
        if err in (_errno.EOPNOTSUPP, ENOTSUPP):
            raise NotSupportedError(f"{what}", errno=err, detail=f"the kernel cannot probe the instruction at "
                                    f"offset {offset:#x} of {path}") from None
        raise


def attach_uprobe_offset(path: str, offset: int, prog: Any, *, pid: Optional[int] = None, retprobe: bool = False,
                         cookie: int = 0, ref_ctr_offset: int = 0, description: str = "") -> Link:
    """Attach ``prog`` at file ``offset`` of ``path``; the link owns the perf event."""
    kind = "uretprobe" if retprobe else "uprobe"
    check_program_type(prog, _UPROBE_PROGRAM_TYPES, f"a {kind}")
    program_fd(prog)  # a closed program fails here, before any perf event exists
    pid_ = _check_pid(pid)
    _check_u64(cookie, "cookie")
    _check_u64(offset, "offset")
    _check_u64(ref_ctr_offset, "ref_ctr_offset", 32)
    desc = description or f"{kind} {path}+{offset:#x}"
    if pid_ > 0:
        desc += f" pid={pid_}"
    fd = open_uprobe_event(path, offset, pid=pid_, retprobe=retprobe, ref_ctr_offset=ref_ctr_offset, what=desc)
    return attach_owned_perf_fd(fd, prog, cookie, desc)


# --------------------------------------------------------------------------
# Executable


class Executable:
    """An ELF executable or shared library whose functions can be probed.

    Made by :func:`open_executable`.  Symbols and USDT notes are read when it
    is opened; the object holds no file descriptor.
    """

    def __init__(self, path: "os.PathLike[str] | str") -> None:
        self._path = resolve_path(path)
        self._image = ElfImage(self._path)
        self._usdt: Optional[List[USDTProbe]] = None

    @property
    def path(self) -> str:
        """Absolute path of the binary."""
        return self._path

    def __repr__(self) -> str:
        return f"<Executable {self._path}>"

    @property
    def is_pie(self) -> bool:
        """True for position-independent binaries (PIE executables, shared libraries)."""
        return self._image.type == ET_DYN

    def symbols(self) -> List[str]:
        """Names of the functions the binary defines (sorted)."""
        return sorted(self._image.functions)

    def address(self, symbol: str) -> int:
        """File offset of function ``symbol``: what the kernel is given.

        Raises :class:`SymbolNotFoundError` for unknown or imported symbols.
        """
        sym = self._image.functions.get(symbol)
        if sym is None or sym.value == 0:
            raise SymbolNotFoundError(symbol, self._path, imported=symbol in self._image.imported)
        off = self._image.file_offset(sym.value, executable=True)
        if off is None:
            # Not inside an executable segment (e.g. a separate debug file):
            # as cilium does, fall back to the raw value.
            off = self._image.file_offset(sym.value, executable=False)
        return sym.value if off is None else off

    def _location(self, symbol: Optional[str], offset: int, address: Optional[int]) -> Tuple[int, str]:
        _check_u64(offset, "offset")
        if address is not None:
            _check_u64(address, "address")
            return address + offset, (symbol or f"{address:#x}")
        if not symbol:
            raise ValueError("give a symbol, or an address (file offset) to probe")
        return self.address(symbol) + offset, symbol

    def _attach(self, symbol: Optional[str], prog: Any, pid: Optional[int], offset: int, address: Optional[int],
                cookie: int, ref_ctr_offset: int, retprobe: bool) -> Link:
        kind = "uretprobe" if retprobe else "uprobe"
        check_program_type(prog, _UPROBE_PROGRAM_TYPES, f"a {kind}")
        program_fd(prog)
        where, name = self._location(symbol, offset, address)
        desc = f"{kind} {self._path}:{name}" + (f"+{offset:#x}" if offset else "")
        return attach_uprobe_offset(self._path, where, prog, pid=pid, retprobe=retprobe, cookie=cookie,
                                    ref_ctr_offset=ref_ctr_offset, description=desc)

    def uprobe(self, symbol: Optional[str], prog: Any, *, pid: Optional[int] = None, offset: int = 0,
               address: Optional[int] = None, cookie: int = 0, ref_ctr_offset: int = 0) -> Link:
        """Run ``prog`` (a KPROBE-type program) when ``symbol`` is entered.

        ``offset`` moves the probe that many bytes into the function (it must
        land on an instruction boundary).  ``address`` is a file offset used
        instead of looking ``symbol`` up (cilium's ``UprobeOptions.Address``).
        ``pid`` limits the probe to one process (default: every process that
        maps the file).  ``cookie`` is what ``bpf_get_attach_cookie()``
        returns in the program (kernel 5.15+).  ``ref_ctr_offset`` is the
        file offset of a USDT semaphore to count up while attached.
        """
        return self._attach(symbol, prog, pid, offset, address, cookie, ref_ctr_offset, False)

    def uretprobe(self, symbol: Optional[str], prog: Any, *, pid: Optional[int] = None, offset: int = 0,
                  address: Optional[int] = None, cookie: int = 0, ref_ctr_offset: int = 0) -> Link:
        """Run ``prog`` when ``symbol`` returns (``PT_REGS_RC`` is the return value).

        Same options as :meth:`uprobe`.
        """
        return self._attach(symbol, prog, pid, offset, address, cookie, ref_ctr_offset, True)

    # -- uprobe.multi ----------------------------------------------------------

    def uprobe_multi(self, symbols: Optional[Sequence[str]], prog: Any, *, addresses: Optional[Sequence[int]] = None,
                     offsets: Optional[Sequence[int]] = None, cookies: Optional[Sequence[int]] = None,
                     ref_ctr_offsets: Optional[Sequence[int]] = None, pid: Optional[int] = None) -> Link:
        """Run ``prog`` at the entry of every function in ``symbols``, with one
        ``bpf_link`` (cilium's ``UprobeMulti``; kernel 6.6+).

        ``addresses`` (file offsets) replace ``symbols``; ``offsets`` move each
        probe that many bytes into its function; ``cookies`` are what
        ``bpf_get_attach_cookie()`` returns at each; ``ref_ctr_offsets`` are
        USDT semaphores; each list has one entry per probe.  ``pid`` limits
        every probe to one process.  ``prog`` is a KPROBE program loaded with
        attach type ``TRACE_UPROBE_MULTI`` (``SEC("uprobe.multi")``).

        An unknown symbol raises :class:`SymbolNotFoundError`; a kernel
        without uprobe.multi links :class:`~ebpf.errors.NotSupportedError`.
        """
        from .uprobe_multi import attach_uprobe_multi

        return attach_uprobe_multi(self, symbols, prog, addresses=addresses, offsets=offsets, cookies=cookies,
                                   ref_ctr_offsets=ref_ctr_offsets, pid=pid)

    def uretprobe_multi(self, symbols: Optional[Sequence[str]], prog: Any, *,
                        addresses: Optional[Sequence[int]] = None, offsets: Optional[Sequence[int]] = None,
                        cookies: Optional[Sequence[int]] = None, ref_ctr_offsets: Optional[Sequence[int]] = None,
                        pid: Optional[int] = None) -> Link:
        """:meth:`uprobe_multi` on the functions' returns (cilium's ``UretprobeMulti``)."""
        from .uprobe_multi import attach_uprobe_multi

        return attach_uprobe_multi(self, symbols, prog, retprobe=True, addresses=addresses, offsets=offsets,
                                   cookies=cookies, ref_ctr_offsets=ref_ctr_offsets, pid=pid)

    # -- USDT ---------------------------------------------------------------

    def usdt_probes(self) -> List[USDTProbe]:
        """The USDT probes in ``.note.stapsdt`` (:class:`ebpf.link.usdt.USDTProbe`)."""
        if self._usdt is None:
            from .usdt import read_probes

            self._usdt = read_probes(self._image)
        return list(self._usdt)

    def usdt(self, provider: str, name: str, prog: Any, *, pid: Optional[int] = None, cookie: int = 0) -> Link:
        """Attach a ``SEC("usdt")`` program to USDT probe ``provider:name``.

        Every location of the probe gets a uprobe; the returned link owns
        them all.  ``cookie`` is what ``bpf_usdt_cookie()`` returns.  See
        :func:`ebpf.link.usdt.attach_usdt`.
        """
        from .usdt import attach_usdt

        return attach_usdt(self, provider, name, prog, pid=pid, cookie=cookie)


def open_executable(path: "os.PathLike[str] | str") -> Executable:
    """Open an ELF executable or shared library for uprobes and USDT probes.

    ``path`` is a path, or a bare library name such as ``"libc.so.6"``
    (searched in ``LD_LIBRARY_PATH`` and the standard library directories)
    or program name (searched in ``PATH``).  A missing file raises
    :class:`ExecutableNotFoundError` (a ``FileNotFoundError``); a file that is
    not an ELF executable or shared object raises
    :class:`~ebpf.errors.InvalidObjectError`.
    """
    return Executable(path)
