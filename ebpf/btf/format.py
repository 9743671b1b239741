"""C declarations for BTF types: ``str(type)`` and :meth:`Spec.format_c`.

:func:`format_spec` writes a header in the spirit of ``bpftool btf dump file X
format c``: every named struct/union/enum/typedef with its full definition,
forward declarations where a pointer refers to a type not yet defined, and an
order in which each by-value use follows its definition, so it compiles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from . import types as T
from .parse import BTFError

if TYPE_CHECKING:  # pragma: no cover
    from .spec import Spec

__all__ = ["declaration", "declarator", "format_spec", "format_c"]

# Anonymous types are printed inline; valid BTF nests them only a few levels
# deep, malformed BTF could loop (anonymous struct -> pointer -> itself).
_MAX_INLINE_DEPTH = 64


def _tag(t: T.Type) -> str:
    if isinstance(t, T.Fwd):
        return t.fwd_kind
    return t.kind  # "struct", "union", "enum"


class _Namer:
    """C names for types; duplicate names (vmlinux has some) get ``___N`` suffixes."""

    def __init__(self) -> None:
        self.names: Dict[int, str] = {}
        self.used: Dict[Tuple[str, str], int] = {}  # (name space, name) -> times given out

    def name(self, t: T.Type) -> str:
        if not isinstance(t, (T.Struct, T.Union, T.Enum, T.Typedef, T.Fwd)):
            return t.name
        key = id(t)
        got = self.names.get(key)
        if got is None:
            space = "ord" if isinstance(t, T.Typedef) else "tag"
            got = self._unique(space, t.name)
            self.names[key] = got
        return got

    def ordinary(self, name: str) -> str:
        """A unique ordinary identifier (enumerators share it with typedefs)."""
        return self._unique("ord", name)

    def _unique(self, space: str, name: str) -> str:
        n = self.used.get((space, name), 0) + 1
        self.used[(space, name)] = n
        return name if n == 1 else f"{name}___{n}"


class _Writer:
    def __init__(self, namer: Optional[_Namer] = None) -> None:
        self.namer = namer
        # Alignments of composites, shared by every body this writer prints,
        # so that a header costs time linear in its members.
        self.layouts: T.Layouts = {}

    def align(self, t: T.Type) -> Optional[int]:
        try:
            return T._alignment(t, self.layouts)
        except (TypeError, BTFError):
            return None

    def packed(self, t: T.Type) -> bool:
        try:
            return T.composite_layout(t, self.layouts)[1]
        except BTFError:
            return False

    def _name(self, t: T.Type) -> str:
        return self.namer.name(t) if self.namer is not None else t.name

    def _enumerator(self, name: str) -> str:
        return self.namer.ordinary(name) if self.namer is not None else name

    def base(self, t: T.Type, depth: int) -> str:
        """The type specifier: ``int``, ``struct foo``, or an inline body."""
        if isinstance(t, T.Void):
            return "void"
        if isinstance(t, (T.Int, T.Float, T.Typedef)):
            return self._name(t) or ("int" if isinstance(t, T.Int) else "float")
        if isinstance(t, T.Fwd):
            return f"{t.fwd_kind} {self._name(t)}"
        if isinstance(t, (T.Struct, T.Union, T.Enum)):
            if t.name:
                return f"{_tag(t)} {self._name(t)}"
            return self.body(t, depth + 1)
        raise BTFError(f"cannot use {t.kind} as a C type specifier")

    def decl(self, t: T.Type, inner: str, depth: int = 0) -> str:
        """``t`` declared with declarator ``inner`` (a name, possibly with ``*``)."""
        for _ in range(T.qualifier_chain_limit):
            if depth > _MAX_INLINE_DEPTH:
                raise BTFError("type nesting too deep (loop through anonymous types?)")
            if isinstance(t, T.Pointer):
                inner = "*" + inner
                t = t.target
            elif isinstance(t, (T.Const, T.Volatile, T.Restrict)):
                word = {T.Const: "const", T.Volatile: "volatile", T.Restrict: "restrict"}[type(t)]
                target = t.type
                if isinstance(T._strip_qualifiers(target), T.Pointer):
                    inner = f"{word} {inner}" if inner else word
                    t = target
                else:
                    res = f"{word} {self.decl(target, inner, depth)}"
                    # const on an array of const elements: say it once.
                    if res.startswith(f"{word} {word} "):
                        res = res[len(word) + 1:]
                    return res
            elif isinstance(t, T.TypeTag):
                t = t.type
            elif isinstance(t, T.Array):
                if inner.startswith("*"):
                    inner = f"({inner})"
                inner = f"{inner}[{t.nelems}]"
                t = t.type
            elif isinstance(t, T.FuncProto):
                if inner.startswith("*"):
                    inner = f"({inner})"
                inner = f"{inner}({self.params(t, depth)})"
                t = t.return_type
            elif isinstance(t, T.Func):
                t = t.type
            elif isinstance(t, T.Var):
                t = t.type
            else:
                spec = self.base(t, depth)
                if not inner:
                    return spec
                return f"{spec} {inner}" if not spec.endswith("*") else spec + inner
        raise BTFError("type chain too long or looping")

    def params(self, proto: T.FuncProto, depth: int) -> str:
        parts = []
        for n, p in enumerate(proto.params):
            pt = p.type
            if isinstance(pt, T.Void) and n == len(proto.params) - 1:
                # A lone void parameter is "(void)", as libbpf prints it: C
                # has no "(...)" without a named parameter before it.
                parts.append("..." if n else "void")
            else:
                parts.append(self.decl(pt, p.name, depth + 1))
        return ", ".join(parts) if parts else "void"

    def body(self, t: T.Type, depth: int) -> str:
        """``struct name { ... }`` (name omitted when anonymous)."""
        if depth > _MAX_INLINE_DEPTH:
            raise BTFError("type nesting too deep (loop through anonymous types?)")
        ind = "\t" * depth
        head = f"{_tag(t)} {self._name(t)} " if t.name else f"{_tag(t)} "
        if isinstance(t, T.Enum):
            if not t.values:
                return head + "{}"
            items = [f"{ind}\t{self._enumerator(v.name)} = {_literal(v.value)}," for v in t.values]
            return head + "{\n" + "\n".join(items) + "\n" + ind + "}" + _enum_size_attribute(t)
        assert isinstance(t, (T.Struct, T.Union))
        lines: List[str] = []
        pos = 0
        is_struct = isinstance(t, T.Struct)
        pad = _Padding(t, ind)
        packed = is_struct and self.packed(t)
        for m in t.members:
            if is_struct:
                # In a packed struct the compiler aligns nothing: every gap
                # is explicit.
                natural = -(-pos // 8) * 8 if packed and not m.bitfield_size else self._natural_next(pos, m)
                if m.offset > natural:
                    lines.extend(pad.fill(pos, m.offset))
            d = self.decl(m.type, m.name, depth)
            if m.bitfield_size:
                d += f": {m.bitfield_size}"
            lines.append(f"{ind}\t{d};")
            if is_struct:
                pos = m.offset + (m.bitfield_size or _bits_of(m.type))
        if is_struct:
            align = self.align(t) or 1
            # Tail padding the compiler adds by itself (up to the alignment)
            # stays implicit; more than that (e.g. from an aligned
            # attribute) is spelled out.
            natural_end = (pos + align * 8 - 1) // (align * 8) * (align * 8)
            if t.size * 8 > natural_end:
                lines.extend(pad.fill(pos, t.size * 8))
        else:
            # A union is as large as its largest member: one more member
            # gives it a size its members do not (members dropped, an
            # aligned attribute).
            align = self.align(t) or 1
            widest = max([m.offset + (m.bitfield_size or _bits_of(m.type)) for m in t.members] or [0])
            natural_end = -(-widest // (align * 8)) * align * 8
            if t.size * 8 > natural_end:
                lines.append(f"{ind}\tchar {pad.name(0)}[{t.size}];")
        attr = " __attribute__((packed))" if self.packed(t) else ""
        return head + "{\n" + "\n".join(lines) + "\n" + ind + "}" + attr

    def _natural_next(self, pos: int, m: T.Member) -> int:
        if m.bitfield_size:
            return pos
        a = self.align(m.type)
        if a is None:
            return pos
        return (pos + a * 8 - 1) // (a * 8) * (a * 8)


def _enum_size_attribute(t: T.Enum) -> str:
    """What makes a C compiler give the enum its BTF size (as libbpf does).

    C sizes an enum by its values: int unless one does not fit.  Clang 14
    and older record 8-byte enums as BTF ENUM with truncated values, and a
    1- or 2-byte enum comes from a packed or mode attribute.
    """
    if t.size == 1:
        return " __attribute__((packed))"
    if t.size == 2:
        return " __attribute__((mode(HI)))"
    if t.size == 8 and all(-(1 << 31) <= v.value < (1 << 32) for v in t.values):
        return " __attribute__((mode(word)))"
    return ""


def _literal(v: int) -> str:
    return f"{v}ULL" if v > 0x7FFFFFFFFFFFFFFF else str(v)


def _bits_of(t: T.Type) -> int:
    try:
        return T.sizeof(t) * 8
    except (TypeError, BTFError):
        return 0


# Gaps up to this many bits are filled with bpftool's anonymous ``long: N``
# bitfields, one per 64 bits; longer ones with one char array, so that the
# output grows with the number of members, not with the size in bytes.
_MAX_BITFIELD_PADDING = 8 * 64


class _Padding:
    """Explicit padding members for one struct body."""

    def __init__(self, t: T.Type, ind: str) -> None:
        assert isinstance(t, (T.Struct, T.Union))
        self.t = t
        self.ind = ind
        self.taken: Optional[Set[str]] = None

    def fill(self, start: int, end: int) -> List[str]:
        """Members covering bits [start, end)."""
        if end - start <= _MAX_BITFIELD_PADDING:
            return self._bits(start, end)
        first = -(-start // 64) * 64  # the next 64-bit boundary
        last = end // 64 * 64
        out = self._bits(start, first)
        out.append(f"{self.ind}\tchar {self.name(first // 8)}[{(last - first) // 8}];")
        out.extend(self._bits(last, end))
        return out

    def _bits(self, start: int, end: int) -> List[str]:
        """Anonymous bitfields covering bits [start, end), as bpftool emits them."""
        out = []
        while start < end:
            n = min(end - start, 64 - start % 64)
            out.append(f"{self.ind}\tlong: {n};")
            start += n
        return out

    def name(self, byte_offset: int) -> str:
        if self.taken is None:
            self.taken = {m.name for m in self.t.members}
        name = f"__pad_{byte_offset}"
        while name in self.taken:
            name = "_" + name
        self.taken.add(name)
        return name


def declarator(t: T.Type, name: str = "") -> str:
    """``t`` as a C declaration of ``name``: ``int (*name)(char *)``, ``char name[16]``."""
    return _Writer().decl(t, name)


def declaration(t: T.Type) -> str:
    """The C declaration a programmer expects for ``t`` (used by ``str(t)``)."""
    w = _Writer()
    if isinstance(t, (T.Struct, T.Union, T.Enum)):
        return w.body(t, 0)
    if isinstance(t, T.Typedef):
        return "typedef " + w.decl(t.type, t.name)
    if isinstance(t, T.Fwd):
        return f"{t.fwd_kind} {t.name}"
    if isinstance(t, (T.Func, T.Var)):
        prefix = "static " if t.linkage == 0 else ("extern " if t.linkage == 2 else "")
        return prefix + w.decl(t, t.name)
    if isinstance(t, T.Datasec):
        lines = [f"/* section {t.name} ({t.size} bytes) */"]
        for v in t.vars:
            vt = v.type
            lines.append(f"/* +{v.offset} */ {w.decl(vt, vt.name)};")
        return "\n".join(lines)
    if isinstance(t, T.DeclTag):
        return f'__attribute__((btf_decl_tag("{t.name}"))) /* on {t.type.kind} {t.type.name} */'
    return w.decl(t, "")


class _Emitter:
    """Orders definitions so every by-value use follows its definition."""

    def __init__(self) -> None:
        self.namer = _Namer()
        self.w = _Writer(self.namer)
        self.out: List[str] = []
        self.state: Dict[int, str] = {}  # id(t) -> "visiting" | "defined"
        self.declared: Set[int] = set()
        self.defined: List[T.Type] = []

    def require(self, t: T.Type, complete: bool, depth: int = 0) -> None:
        for _ in range(T.qualifier_chain_limit):
            if depth > _MAX_INLINE_DEPTH:
                raise BTFError("type nesting too deep")
            if isinstance(t, (T.Const, T.Volatile, T.Restrict, T.TypeTag, T.Var, T.Func)):
                t = t.type
            elif isinstance(t, T.Pointer):
                t, complete = t.target, False
            elif isinstance(t, T.Array):
                t, complete = t.type, True
            elif isinstance(t, T.FuncProto):
                self.require(t.return_type, False, depth + 1)
                for p in t.params:
                    self.require(p.type, False, depth + 1)
                return
            elif isinstance(t, T.Typedef):
                self.define_typedef(t)
                if not complete:
                    return
                t = t.type
            elif isinstance(t, (T.Struct, T.Union)):
                if not t.name:
                    for m in t.members:
                        self.require(m.type, True, depth + 1)
                    return
                if complete:
                    self.define(t)
                else:
                    self.forward(t)
                return
            elif isinstance(t, T.Enum):
                if t.name:
                    self.define(t)
                return
            elif isinstance(t, T.Fwd):
                self.forward(t)
                return
            else:
                return
        raise BTFError("type chain too long or looping")

    def forward(self, t: T.Type) -> None:
        key = id(t)
        if self.state.get(key) == "defined" or key in self.declared:
            return
        self.declared.add(key)
        self.out.append(f"{_tag(t)} {self.namer.name(t)};\n")

    def define(self, t: T.Type) -> None:
        key = id(t)
        if key in self.state:
            if self.state[key] == "visiting":
                self.forward(t)  # by-value loop: invalid C, keep the output finite
            return
        self.state[key] = "visiting"
        if isinstance(t, (T.Struct, T.Union)):
            for m in t.members:
                self.require(m.type, True)
        self.namer.name(t)
        if isinstance(t, T.Enum) and not t.values:
            # An enum without values is a forward declaration (C has no
            # empty enum), as libbpf prints it.
            self.out.append(f"enum {self.namer.name(t)};\n")
        else:
            self.out.append(self.w.body(t, 0) + ";\n")
        self.state[key] = "defined"
        self.defined.append(t)

    def define_typedef(self, t: T.Typedef) -> None:
        key = id(t)
        if key in self.state or t.name in _SKIPPED:
            return
        self.state[key] = "visiting"
        self.require(t.type, False)
        self.out.append("typedef " + self.w.decl(t.type, self.namer.name(t)) + ";\n")
        self.state[key] = "defined"
        self.defined.append(t)

    def layout_asserts(self) -> List[str]:
        """``_Static_assert`` lines for what was defined (see :func:`format_spec`)."""
        out: List[str] = []
        for t in self.defined:
            if isinstance(t, T.Enum):
                continue
            cname = f"{_tag(t)} {self.namer.name(t)}" if not isinstance(t, T.Typedef) else self.namer.name(t)
            if isinstance(t, T.Typedef):
                try:
                    target = T.underlying(t)
                    if isinstance(target, (T.Fwd, T.FuncProto, T.Void)) or (
                            isinstance(target, (T.Struct, T.Union)) and target.name):
                        continue  # incomplete, not an object, or asserted under its tag
                    size = T.sizeof(t)
                except (TypeError, BTFError):
                    continue
            else:
                assert isinstance(t, (T.Struct, T.Union))
                size = t.size
            out.append(f'_Static_assert(sizeof({cname}) == {size}, "size of {cname}");')
            target = T.underlying(t)
            if not isinstance(target, (T.Struct, T.Union)):
                continue
            stack = [(target, "", 0)]
            while stack:
                cur, prefix, base = stack.pop()
                assert isinstance(cur, (T.Struct, T.Union))
                for m in cur.members:
                    if m.bitfield_size:
                        continue
                    off = base + m.offset
                    path = prefix + m.name
                    if m.name and off % 8 == 0:
                        out.append(f'_Static_assert(__builtin_offsetof({cname}, {path}) == {off // 8}, '
                                   f'"offset of {path} in {cname}");')
                    inner = T.underlying(m.type)
                    if isinstance(inner, (T.Struct, T.Union)) and not inner.name:
                        stack.append((inner, path + "." if m.name else prefix, off))
        return out


# Compiler built-ins that BTF records but C must not redefine.
_SKIPPED = frozenset({"__builtin_va_list"})


def format_spec(spec: Spec, *, layout_asserts: bool = False) -> str:
    """A compilable C header with every named type of ``spec``.

    With ``layout_asserts`` the header ends with a ``_Static_assert`` on the
    size of every struct, union and typedef it defines and on the offset of
    every byte-aligned member, taken from the BTF: compiling it proves that
    the C declarations lay out memory as the BTF says.
    """
    e = _Emitter()
    for t in spec:
        if not t.name or t.name in _SKIPPED:
            continue
        if isinstance(t, (T.Struct, T.Union, T.Enum)):
            e.define(t)
        elif isinstance(t, T.Typedef):
            e.define_typedef(t)
        elif isinstance(t, T.Fwd):
            e.forward(t)
    guard = "__BTF_FORMAT_C__"
    head = f"#ifndef {guard}\n#define {guard}\n\n"
    tail = ""
    if layout_asserts:
        tail = "\n" + "".join(line + "\n" for line in e.layout_asserts())
    return head + "\n".join(e.out) + tail + f"\n#endif /* {guard} */\n"


def format_c(spec: Spec, *, layout_asserts: bool = False) -> str:
    """Alias of :func:`format_spec` (``spec.format_c()``)."""
    return format_spec(spec, layout_asserts=layout_asserts)
