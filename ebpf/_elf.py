"""A small, strict reader for ELF64 BPF relocatable objects.

The reader exists so that the library can look at an object *before* handing
it to libbpf, which trusts much of its input.  It therefore refuses anything
it cannot fully bounds-check: every offset, size and index read from the file
is checked against the buffer, and any violation raises
:class:`~ebpf.errors.InvalidObjectError` with a message naming the culprit.

Only what BPF objects use is supported: 64-bit class, either byte order,
``EM_BPF`` machine.  Headers are parsed eagerly; section contents are sliced
on first access only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Tuple

from .errors import InvalidObjectError

__all__ = [
    "ElfFile",
    "Section",
    "Symbol",
    "Relocation",
    "EM_BPF",
    "ET_REL",
    "SHT_NULL",
    "SHT_PROGBITS",
    "SHT_SYMTAB",
    "SHT_STRTAB",
    "SHT_RELA",
    "SHT_NOBITS",
    "SHT_REL",
    "SHT_SYMTAB_SHNDX",
    "SHN_UNDEF",
    "SHN_LORESERVE",
    "SHN_ABS",
    "SHN_COMMON",
    "SHN_XINDEX",
    "STT_NOTYPE",
    "STT_OBJECT",
    "STT_FUNC",
    "STT_SECTION",
    "STT_FILE",
    "STB_LOCAL",
    "STB_GLOBAL",
    "STB_WEAK",
    "SHF_WRITE",
    "SHF_ALLOC",
    "SHF_EXECINSTR",
]

EM_BPF = 247
ET_REL = 1

SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_RELA = 4
SHT_NOBITS = 8
SHT_REL = 9
SHT_SYMTAB_SHNDX = 18

SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
SHN_ABS = 0xFFF1
SHN_COMMON = 0xFFF2
SHN_XINDEX = 0xFFFF

SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4

STT_NOTYPE = 0
STT_OBJECT = 1
STT_FUNC = 2
STT_SECTION = 3
STT_FILE = 4

STB_LOCAL = 0
STB_GLOBAL = 1
STB_WEAK = 2

_EHDR_SIZE = 64
_SHDR_SIZE = 64
_SYM_SIZE = 24
_REL_SIZE = 16
_RELA_SIZE = 24


@dataclass
class Section:
    """One section header plus (lazily) its contents."""

    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int
    addralign: int
    _buf: memoryview = field(repr=False, compare=False, default=memoryview(b""))
    _data: Optional[bytes] = field(repr=False, compare=False, default=None)

    @property
    def data(self) -> bytes:
        """The section's bytes (empty for ``SHT_NOBITS``)."""
        if self._data is None:
            if self.type == SHT_NOBITS:
                self._data = b""
            else:
                self._data = bytes(self._buf[self.offset : self.offset + self.size])
        return self._data

    def __str__(self) -> str:
        return f"section {self.index} ({self.name})"


class Symbol(NamedTuple):
    """One entry of the symbol table."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, as the field always did
    name: str
    value: int
    size: int
    type: int
    bind: int
    visibility: int
    shndx: int


class Relocation(NamedTuple):
    """One REL or RELA entry; ``addend`` is 0 for REL."""

    offset: int
    symbol: Symbol
    type: int
    addend: int


def _fail(msg: str) -> InvalidObjectError:
    return InvalidObjectError(f"invalid ELF object: {msg}")


def _cstring(table: bytes, offset: int, what: str) -> str:
    """A NUL-terminated string from a string table, bounds-checked."""
    if offset >= len(table):
        raise _fail(f"{what}: name offset {offset} outside string table of {len(table)} bytes")
    end = table.find(b"\0", offset)
    if end < 0:
        raise _fail(f"{what}: name at offset {offset} is not NUL-terminated")
    try:
        return table[offset:end].decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(f"{what}: name is not valid UTF-8") from None


class ElfFile:
    """A parsed ELF64 BPF object.

    Raises :class:`~ebpf.errors.InvalidObjectError` when ``data`` is not a
    well-formed 64-bit ``EM_BPF`` object.  Symbols are parsed on first use of
    :attr:`symbols`.
    """

    def __init__(self, data: bytes) -> None:
        self._raw = bytes(data)
        self._buf = memoryview(self._raw)
        self._symbols: Optional[List[Symbol]] = None
        self._symtab: Optional[Section] = None
        self._by_name: Optional[Dict[str, Section]] = None
        self._relocs: Dict[int, List[Relocation]] = {}
        self._rel_sections: Optional[Dict[int, List[Section]]] = None
        self._parse_header()
        self._parse_sections()

    # -- headers -----------------------------------------------------------

    def _parse_header(self) -> None:
        data = self._raw
        if len(data) < 4 or data[:4] != b"\x7fELF":
            raise InvalidObjectError("not an ELF file")
        if len(data) < _EHDR_SIZE:
            raise _fail("truncated ELF header")
        if data[4] != 2:
            raise _fail(f"not a 64-bit ELF file (class {data[4]})")
        if data[5] == 1:
            self.byteorder = "little"
            self._e = "<"
        elif data[5] == 2:
            self.byteorder = "big"
            self._e = ">"
        else:
            raise _fail(f"unknown byte order {data[5]}")
        if data[6] != 1:
            raise _fail(f"unknown ELF version {data[6]}")
        (
            self.type,
            self.machine,
            _version,
            _entry,
            _phoff,
            shoff,
            self.flags,
            _ehsize,
            _phentsize,
            _phnum,
            shentsize,
            shnum,
            shstrndx,
        ) = struct.unpack_from(self._e + "HHIQQQIHHHHHH", data, 16)
        if self.machine != EM_BPF:
            raise InvalidObjectError(f"not a BPF object (machine {self.machine})")
        if self.type != ET_REL:
            raise _fail(f"not a relocatable object (type {self.type})")
        if shoff == 0:
            raise _fail("no section header table")
        if shentsize != _SHDR_SIZE:
            raise _fail(f"section header size {shentsize}, expected {_SHDR_SIZE}")
        self._shoff = shoff
        # Section 0 carries the real counts when they overflow 16 bits.
        first = self._shdr(0)
        if shnum == 0:
            shnum = first[5]  # sh_size
        if shstrndx == SHN_XINDEX:
            shstrndx = first[6]  # sh_link
        if shnum == 0:
            raise _fail("no sections")
        if shoff + shnum * _SHDR_SIZE > len(data):
            raise _fail(f"section header table ({shnum} entries at {shoff}) extends past end of file")
        if shstrndx == SHN_UNDEF or shstrndx >= shnum:
            raise _fail(f"section name table index {shstrndx} out of range (0..{shnum - 1})")
        self._shnum = shnum
        self._shstrndx = shstrndx

    def _shdr(self, index: int) -> Tuple[int, ...]:
        off = self._shoff + index * _SHDR_SIZE
        if off + _SHDR_SIZE > len(self._raw):
            raise _fail(f"section header {index} extends past end of file")
        return struct.unpack_from(self._e + "IIQQQQIIQQ", self._raw, off)

    def _parse_sections(self) -> None:
        size = len(self._raw)
        headers = [self._shdr(i) for i in range(self._shnum)]
        strhdr = headers[self._shstrndx]
        if strhdr[1] != SHT_STRTAB:
            raise _fail(f"section name table {self._shstrndx} is not a string table (type {strhdr[1]})")
        if strhdr[4] + strhdr[5] > size:
            raise _fail(f"section name table {self._shstrndx} extends past end of file")
        names = self._raw[strhdr[4] : strhdr[4] + strhdr[5]]
        sections: List[Section] = []
        for i, (name, typ, flags, _addr, offset, sz, link, info, align, entsize) in enumerate(headers):
            sec_name = _cstring(names, name, f"section {i}") if i != 0 else ""
            if typ != SHT_NOBITS and typ != SHT_NULL and offset + sz > size:
                raise _fail(f"section {i} ({sec_name}) extends past end of file")
            if link >= self._shnum:
                raise _fail(f"section {i} ({sec_name}) links to section {link} of {self._shnum}")
            sections.append(
                Section(i, sec_name, typ, flags, offset, sz, link, info, entsize, align, self._buf)
            )
        self.sections: List[Section] = sections

    # -- lookups -----------------------------------------------------------

    def section_by_name(self, name: str) -> Optional[Section]:
        """The first section called ``name``, or None."""
        if self._by_name is None:
            by_name: Dict[str, Section] = {}
            for sec in self.sections:
                by_name.setdefault(sec.name, sec)
            self._by_name = by_name
        return self._by_name.get(name)

    def section(self, index: int) -> Section:
        """Section ``index``; raises InvalidObjectError when out of range."""
        if not 0 <= index < len(self.sections):
            raise _fail(f"section index {index} out of range (0..{len(self.sections) - 1})")
        return self.sections[index]

    @property
    def symtab(self) -> Optional[Section]:
        """The ``SHT_SYMTAB`` section, or None when the object has none."""
        self._load_symbols()
        return self._symtab

    @property
    def symbols(self) -> List[Symbol]:
        """Every symbol table entry, index 0 (the null symbol) included."""
        self._load_symbols()
        assert self._symbols is not None
        return self._symbols

    def _load_symbols(self) -> None:
        if self._symbols is not None:
            return
        tables = [s for s in self.sections if s.type == SHT_SYMTAB]
        if len(tables) > 1:
            raise _fail("more than one symbol table")
        if not tables:
            self._symbols = []
            return
        symtab = tables[0]
        if symtab.size % _SYM_SIZE:
            raise _fail(f"{symtab} size {symtab.size} is not a multiple of {_SYM_SIZE}")
        strsec = self.sections[symtab.link]
        if strsec.type != SHT_STRTAB:
            raise _fail(f"{symtab} links to {strsec}, which is not a string table")
        strtab = strsec.data
        fmt = struct.Struct(self._e + "IBBHQQ")
        nsec = len(self.sections)
        symbols: List[Symbol] = []
        for i, (name, info, other, shndx, value, sz) in enumerate(fmt.iter_unpack(symtab.data)):
            sym_name = _cstring(strtab, name, f"symbol {i}") if name else ""
            if shndx != SHN_UNDEF and shndx < SHN_LORESERVE and shndx >= nsec:
                raise _fail(f"symbol {i} ({sym_name}) in section {shndx} of {nsec}")
            symbols.append(Symbol(i, sym_name, value, sz, info & 0xF, info >> 4, other & 0x3, shndx))
        self._symtab = symtab
        self._symbols = symbols

    def relocation_sections(self, section: Section) -> List[Section]:
        """The SHT_REL / SHT_RELA sections that apply to ``section``."""
        if self._rel_sections is None:
            by_target: Dict[int, List[Section]] = {}
            for s in self.sections:
                if s.type in (SHT_REL, SHT_RELA):
                    by_target.setdefault(s.info, []).append(s)
            self._rel_sections = by_target
        return list(self._rel_sections.get(section.index, ()))

    def relocations(self, section: Section) -> List[Relocation]:
        """Every relocation against ``section``, in file order.

        Each entry's offset must lie inside ``section`` and its symbol index
        inside the symbol table the relocation section links to.
        """
        out: List[Relocation] = []
        for rel in self.relocation_sections(section):
            out.extend(self._parse_relocations(rel, section))
        return out

    def _parse_relocations(self, rel: Section, target: Section) -> List[Relocation]:
        done = self._relocs.get(rel.index)
        if done is None:
            done = self._relocs[rel.index] = self._read_relocations(rel, target)
        return done

    def _read_relocations(self, rel: Section, target: Section) -> List[Relocation]:
        symbols = self.symbols
        if self._symtab is None or rel.link != self._symtab.index:
            raise _fail(f"{rel} does not link to the symbol table")
        is_rela = rel.type == SHT_RELA
        entsize = _RELA_SIZE if is_rela else _REL_SIZE
        if rel.size % entsize:
            raise _fail(f"{rel} size {rel.size} is not a multiple of {entsize}")
        fmt = struct.Struct(self._e + ("QQq" if is_rela else "QQ"))
        nsyms, size = len(symbols), target.size
        out: List[Relocation] = []
        for i, fields in enumerate(fmt.iter_unpack(rel.data)):
            offset, info = fields[0], fields[1]
            sym_index = info >> 32
            if sym_index >= nsyms:
                raise _fail(f"{rel} entry {i}: symbol index {sym_index} out of range (0..{nsyms - 1})")
            if offset >= size:
                raise _fail(f"{rel} entry {i}: offset {offset} outside {target} of {size} bytes")
            out.append(Relocation(offset, symbols[sym_index], info & 0xFFFFFFFF, fields[2] if is_rela else 0))
        return out
