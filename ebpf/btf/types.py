"""BTF types as Python objects: one class per BTF kind.

Types form a graph with cycles (``struct list_head { struct list_head *next; }``),
so references to other types may be stored as type ids and resolved through
the owning :class:`~ebpf.btf.Spec` on first access; that keeps loading the
kernel's 100k+ types lazy.  Types built by hand simply hold other types.

Equality is structural (two loads of the same ELF give equal types) and is
computed iteratively with a set of pairs assumed equal, so cycles terminate.
``repr`` is shallow; ``str`` prints the C declaration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple
from typing import Union as _U

from .parse import BTFError

if TYPE_CHECKING:  # pragma: no cover
    from .codec import Codec
    from .spec import Spec

__all__ = [
    "Type", "Void", "Int", "Pointer", "Array", "Struct", "Union", "Member", "Enum", "Enum64",
    "EnumValue", "Fwd", "Typedef", "Volatile", "Const", "Restrict", "Func", "FuncProto",
    "FuncParam", "Var", "Datasec", "VarSecinfo", "Float", "DeclTag", "TypeTag",
    "IntEncoding", "FuncLinkage", "VarLinkage", "FwdKind",
    "sizeof", "alignof", "underlying", "qualifier_chain_limit",
]

# Longest chain of typedefs/qualifiers followed before declaring a loop; valid
# BTF never gets close, malformed BTF must not hang us.
qualifier_chain_limit = 256

TypeRef = _U["Type", int]


class IntEncoding:
    """Bits of :attr:`Int.encoding` (``BTF_INT_*``)."""

    NONE = 0
    SIGNED = 1
    CHAR = 2
    BOOL = 4


class FuncLinkage:
    STATIC = 0
    GLOBAL = 1
    EXTERN = 2


class VarLinkage:
    STATIC = 0
    GLOBAL = 1  # BTF_VAR_GLOBAL_ALLOCATED
    EXTERN = 2


class FwdKind:
    STRUCT = "struct"
    UNION = "union"


class Type:
    """Base of every BTF type.  ``id`` is 0 for types not from a Spec."""

    __slots__ = ("id", "name", "_spec", "_codec")
    kind: str = "unknown"

    def __init__(self, name: str = "", *, id: int = 0) -> None:
        self.id = id
        self.name = name
        self._spec: Optional["Spec"] = None
        self._codec: Optional["Codec"] = None  # ebpf.btf.codec's cache

    def _ref(self, value: TypeRef) -> "Type":
        if isinstance(value, int):
            if self._spec is None:
                raise BTFError(f"{self.kind} {self.name!r} refers to type id {value} without a spec")
            return self._spec.type_by_id(value)
        return value

    # Shallow per-kind data compared by __eq__, and children compared pairwise.
    def _shallow(self) -> Tuple[Any, ...]:
        return (self.name,)

    def _children(self) -> List["Type"]:
        return []

    def resolve(self) -> "Type":
        """The type with typedefs and qualifiers (const, volatile, restrict, type tags) skipped."""
        return underlying(self)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Type):
            return NotImplemented
        return _graph_equal(self, other)

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name))

    def __repr__(self) -> str:
        extra = self._repr_extra()
        ident = f" id={self.id}" if self.id else ""
        name = f" {self.name!r}" if self.name else ""
        return f"<{type(self).__name__}{name}{ident}{extra}>"

    def _repr_extra(self) -> str:
        return ""

    def __str__(self) -> str:
        from .format import declaration

        return declaration(self)


class Void(Type):
    """The void type (type id 0)."""

    __slots__ = ()
    kind = "void"

    def __init__(self) -> None:
        super().__init__("", id=0)


class Int(Type):
    """An integer.  ``encoding`` is a combination of :class:`IntEncoding` bits;
    ``bits``/``offset`` describe legacy bitfield-in-int encodings."""

    __slots__ = ("size", "encoding", "bits", "offset")
    kind = "int"

    def __init__(self, name: str, size: int, encoding: int = 0, bits: Optional[int] = None,
                 offset: int = 0, *, id: int = 0) -> None:
        super().__init__(name, id=id)
        self.size = size
        self.encoding = encoding
        self.bits = size * 8 if bits is None else bits
        self.offset = offset

    @property
    def signed(self) -> bool:
        return bool(self.encoding & IntEncoding.SIGNED)

    @property
    def is_char(self) -> bool:
        return bool(self.encoding & IntEncoding.CHAR)

    @property
    def is_bool(self) -> bool:
        return bool(self.encoding & IntEncoding.BOOL)

    def _shallow(self) -> Tuple[Any, ...]:
        return (self.name, self.size, self.encoding, self.bits, self.offset)

    def _repr_extra(self) -> str:
        return f" size={self.size}" + (" signed" if self.signed else "")


class _RefType(Type):
    """A type that wraps exactly one other type in ``type``."""

    __slots__ = ("_type",)

    def __init__(self, type: TypeRef, name: str = "", *, id: int = 0) -> None:
        super().__init__(name, id=id)
        self._type = type

    @property
    def type(self) -> Type:
        return self._ref(self._type)

    @type.setter
    def type(self, value: Type) -> None:
        self._type = value

    def _children(self) -> List[Type]:
        return [self.type]


class Pointer(Type):
    """A pointer to ``target``."""

    __slots__ = ("_target",)
    kind = "pointer"

    def __init__(self, target: TypeRef, *, id: int = 0) -> None:
        super().__init__("", id=id)
        self._target = target

    @property
    def target(self) -> Type:
        return self._ref(self._target)

    @target.setter
    def target(self, value: Type) -> None:
        self._target = value

    def _children(self) -> List[Type]:
        return [self.target]


class Array(Type):
    """``nelems`` elements of ``type``, indexed by ``index_type``."""

    __slots__ = ("_type", "_index_type", "nelems")
    kind = "array"

    def __init__(self, type: TypeRef, nelems: int, index_type: Optional[TypeRef] = None, *,
                 id: int = 0) -> None:
        super().__init__("", id=id)
        self._type = type
        self._index_type = index_type if index_type is not None else Int("__ARRAY_SIZE_TYPE__", 4)
        self.nelems = nelems

    @property
    def type(self) -> Type:
        return self._ref(self._type)

    @type.setter
    def type(self, value: Type) -> None:
        self._type = value

    @property
    def index_type(self) -> Type:
        return self._ref(self._index_type)

    def _shallow(self) -> Tuple[Any, ...]:
        return (self.nelems,)

    def _children(self) -> List[Type]:
        return [self.type, self.index_type]

    def _repr_extra(self) -> str:
        return f" nelems={self.nelems}"


class Member:
    """A struct or union member; ``offset`` in bits, ``bitfield_size`` 0 unless a bitfield."""

    __slots__ = ("name", "_type", "offset", "bitfield_size", "_owner")

    def __init__(self, name: str, type: TypeRef, offset: int = 0, bitfield_size: int = 0) -> None:
        self.name = name
        self._type = type
        self.offset = offset
        self.bitfield_size = bitfield_size
        self._owner: Optional[Type] = None

    @property
    def type(self) -> Type:
        if isinstance(self._type, int):
            if self._owner is None:
                raise BTFError(f"member {self.name!r} refers to a type id without a spec")
            return self._owner._ref(self._type)
        return self._type

    @type.setter
    def type(self, value: Type) -> None:
        self._type = value

    def __repr__(self) -> str:
        bf = f", bitfield_size={self.bitfield_size}" if self.bitfield_size else ""
        return f"Member({self.name!r}, {self.type!r}, offset={self.offset}{bf})"


class _Composite(Type):
    __slots__ = ("size", "members")

    def __init__(self, name: str, size: int, members: Optional[List[Member]] = None, *,
                 id: int = 0) -> None:
        super().__init__(name, id=id)
        self.size = size
        self.members: List[Member] = list(members or [])
        for m in self.members:
            m._owner = self

    def member(self, name: str) -> Member:
        """The member called ``name`` (searching anonymous members too)."""
        for m in self.members:
            if m.name == name:
                return m
        for m in self.members:
            if not m.name:
                inner = underlying(m.type)
                if isinstance(inner, _Composite):
                    try:
                        found = inner.member(name)
                    except KeyError:
                        continue
                    return Member(found.name, found.type, m.offset + found.offset, found.bitfield_size)
        raise KeyError(f"{self.kind} {self.name or '(anon)'} has no member {name!r}")

    def _shallow(self) -> Tuple[Any, ...]:
        return (self.name, self.size, tuple((m.name, m.offset, m.bitfield_size) for m in self.members))

    def _children(self) -> List[Type]:
        return [m.type for m in self.members]

    def _repr_extra(self) -> str:
        return f" size={self.size} members={len(self.members)}"


class Struct(_Composite):
    """A struct: ``size`` in bytes and a list of :class:`Member`."""

    __slots__ = ()
    kind = "struct"


class Union(_Composite):
    """A union: ``size`` in bytes and a list of :class:`Member`."""

    __slots__ = ()
    kind = "union"


class EnumValue:
    """One enumerator."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: int) -> None:
        self.name = name
        self.value = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EnumValue):
            return NotImplemented
        return (self.name, self.value) == (other.name, other.value)

    def __hash__(self) -> int:
        return hash((self.name, self.value))

    def __repr__(self) -> str:
        return f"EnumValue({self.name!r}, {self.value})"


class Enum(Type):
    """An enum of ``size`` bytes (1-8).  BTF ENUM and ENUM64 both decode to this
    class; :class:`Enum64` is an alias so ``isinstance`` checks read naturally."""

    __slots__ = ("size", "signed", "values")
    kind = "enum"

    def __init__(self, name: str, size: int = 4, values: Optional[List[EnumValue]] = None,
                 signed: bool = False, *, id: int = 0) -> None:
        super().__init__(name, id=id)
        self.size = size
        self.signed = signed
        self.values: List[EnumValue] = list(values or [])

    def _shallow(self) -> Tuple[Any, ...]:
        return (self.name, self.size, self.signed, tuple((v.name, v.value) for v in self.values))

    def _repr_extra(self) -> str:
        return f" size={self.size} values={len(self.values)}"


Enum64 = Enum


class Fwd(Type):
    """A forward declaration; ``fwd_kind`` is ``"struct"`` or ``"union"``."""

    __slots__ = ("fwd_kind",)
    kind = "fwd"

    def __init__(self, name: str, fwd_kind: str = FwdKind.STRUCT, *, id: int = 0) -> None:
        super().__init__(name, id=id)
        self.fwd_kind = fwd_kind

    def _shallow(self) -> Tuple[Any, ...]:
        return (self.name, self.fwd_kind)


class Typedef(_RefType):
    """``typedef <type> <name>``."""

    __slots__ = ()
    kind = "typedef"

    def __init__(self, name: str, type: TypeRef, *, id: int = 0) -> None:
        super().__init__(type, name, id=id)


class Volatile(_RefType):
    __slots__ = ()
    kind = "volatile"

    def __init__(self, type: TypeRef, *, id: int = 0) -> None:
        super().__init__(type, "", id=id)


class Const(_RefType):
    __slots__ = ()
    kind = "const"

    def __init__(self, type: TypeRef, *, id: int = 0) -> None:
        super().__init__(type, "", id=id)


class Restrict(_RefType):
    __slots__ = ()
    kind = "restrict"

    def __init__(self, type: TypeRef, *, id: int = 0) -> None:
        super().__init__(type, "", id=id)


class TypeTag(_RefType):
    """``__attribute__((btf_type_tag(name)))`` applied to ``type``; ``name`` is the tag value."""

    __slots__ = ()
    kind = "type_tag"

    def __init__(self, name: str, type: TypeRef, *, id: int = 0) -> None:
        super().__init__(type, name, id=id)


class FuncParam:
    __slots__ = ("name", "_type", "_owner")

    def __init__(self, name: str, type: TypeRef) -> None:
        self.name = name
        self._type = type
        self._owner: Optional[Type] = None

    @property
    def type(self) -> Type:
        if isinstance(self._type, int):
            if self._owner is None:
                raise BTFError(f"parameter {self.name!r} refers to a type id without a spec")
            return self._owner._ref(self._type)
        return self._type

    def __repr__(self) -> str:
        return f"FuncParam({self.name!r}, {self.type!r})"


class FuncProto(Type):
    """A function signature; a trailing parameter of type Void means ``...``."""

    __slots__ = ("_return_type", "params")
    kind = "func_proto"

    def __init__(self, return_type: TypeRef, params: Optional[List[FuncParam]] = None, *,
                 id: int = 0) -> None:
        super().__init__("", id=id)
        self._return_type = return_type
        self.params: List[FuncParam] = list(params or [])
        for p in self.params:
            p._owner = self

    @property
    def return_type(self) -> Type:
        return self._ref(self._return_type)

    def _shallow(self) -> Tuple[Any, ...]:
        return tuple(p.name for p in self.params)

    def _children(self) -> List[Type]:
        return [self.return_type] + [p.type for p in self.params]


class Func(_RefType):
    """A function: ``type`` is its :class:`FuncProto`, ``linkage`` a :class:`FuncLinkage`."""

    __slots__ = ("linkage",)
    kind = "func"

    def __init__(self, name: str, type: TypeRef, linkage: int = FuncLinkage.STATIC, *,
                 id: int = 0) -> None:
        super().__init__(type, name, id=id)
        self.linkage = linkage

    def _shallow(self) -> Tuple[Any, ...]:
        return (self.name, self.linkage)


class Var(_RefType):
    """A global variable; ``linkage`` is a :class:`VarLinkage`."""

    __slots__ = ("linkage",)
    kind = "var"

    def __init__(self, name: str, type: TypeRef, linkage: int = VarLinkage.STATIC, *,
                 id: int = 0) -> None:
        super().__init__(type, name, id=id)
        self.linkage = linkage

    def _shallow(self) -> Tuple[Any, ...]:
        return (self.name, self.linkage)


class VarSecinfo:
    """A variable inside a :class:`Datasec`, at ``offset`` bytes, ``size`` bytes long."""

    __slots__ = ("_type", "offset", "size", "_owner")

    def __init__(self, type: TypeRef, offset: int, size: int) -> None:
        self._type = type
        self.offset = offset
        self.size = size
        self._owner: Optional[Type] = None

    @property
    def type(self) -> Type:
        if isinstance(self._type, int):
            if self._owner is None:
                raise BTFError("section variable refers to a type id without a spec")
            return self._owner._ref(self._type)
        return self._type

    def __repr__(self) -> str:
        return f"VarSecinfo({self.type!r}, offset={self.offset}, size={self.size})"


class Datasec(Type):
    """An ELF data section (``.data``, ``.bss``, ``.rodata``, ...) and its variables."""

    __slots__ = ("size", "vars")
    kind = "datasec"

    def __init__(self, name: str, size: int = 0, vars: Optional[List[VarSecinfo]] = None, *,
                 id: int = 0) -> None:
        super().__init__(name, id=id)
        self.size = size
        self.vars: List[VarSecinfo] = list(vars or [])
        for v in self.vars:
            v._owner = self

    def _shallow(self) -> Tuple[Any, ...]:
        return (self.name, self.size, tuple((v.offset, v.size) for v in self.vars))

    def _children(self) -> List[Type]:
        return [v.type for v in self.vars]


class Float(Type):
    __slots__ = ("size",)
    kind = "float"

    def __init__(self, name: str, size: int, *, id: int = 0) -> None:
        super().__init__(name, id=id)
        self.size = size

    def _shallow(self) -> Tuple[Any, ...]:
        return (self.name, self.size)


class DeclTag(_RefType):
    """``__attribute__((btf_decl_tag(name)))`` on ``type``, or on its member/parameter
    ``component_idx`` (-1 for the type itself)."""

    __slots__ = ("component_idx",)
    kind = "decl_tag"

    def __init__(self, name: str, type: TypeRef, component_idx: int = -1, *, id: int = 0) -> None:
        super().__init__(type, name, id=id)
        self.component_idx = component_idx

    def _shallow(self) -> Tuple[Any, ...]:
        return (self.name, self.component_idx)


_QUALIFIERS = (Typedef, Volatile, Const, Restrict, TypeTag)


def underlying(t: Type) -> Type:
    """Skip typedefs and qualifiers (``const``, ``volatile``, ``restrict``, type tags)."""
    for _ in range(qualifier_chain_limit):
        if not isinstance(t, _QUALIFIERS):
            return t
        t = t.type
    raise BTFError(f"typedef/qualifier chain too long or looping at {t!r}")


def _strip_qualifiers(t: Type) -> Type:
    """Skip qualifiers but keep typedefs."""
    for _ in range(qualifier_chain_limit):
        if not isinstance(t, (Volatile, Const, Restrict, TypeTag)):
            return t
        t = t.type
    raise BTFError(f"qualifier chain too long or looping at {t!r}")


POINTER_SIZE = 8

# id of a struct or union -> (alignment, packed), see composite_layout.
Layouts = Dict[int, Tuple[int, bool]]


def sizeof(t: Type) -> int:
    """Size in bytes, resolved through typedefs, qualifiers and arrays.

    Void is 0 (as in cilium/ebpf); types without a size (functions, forward
    declarations) raise :class:`TypeError`.
    """
    mult = 1
    for _ in range(qualifier_chain_limit):
        if isinstance(t, (Int, Enum, Struct, Union, Float, Datasec)):
            return mult * t.size
        if isinstance(t, Pointer):
            return mult * POINTER_SIZE
        if isinstance(t, Void):
            return 0
        if isinstance(t, Array):
            mult *= t.nelems
            t = t.type
            continue
        if isinstance(t, (Typedef, Volatile, Const, Restrict, TypeTag, Var)):
            t = t.type
            continue
        raise TypeError(f"{t.kind} {t.name or '(anon)'} has no size")
    raise BTFError(f"type chain too long or looping at {t!r}")


def alignof(t: Type) -> int:
    """Alignment in bytes, as libbpf's ``btf__align_of`` computes it.

    Scalars align to their size (at most 16), pointers to 8, arrays to their
    element; a struct or union to its largest member's alignment, or to 1
    when it is packed (a member off its natural alignment, or a size that is
    not a multiple of the alignment).
    """
    return _alignment(t, {})


def _alignment(t: Type, memo: Layouts) -> int:
    t = _element(t)
    if isinstance(t, (Int, Enum, Float)):
        return max(1, min(t.size, 16))
    if isinstance(t, Pointer):
        return POINTER_SIZE
    if isinstance(t, (Struct, Union)):
        return composite_layout(t, memo)[0]
    if isinstance(t, Void):
        return 1
    raise TypeError(f"{t.kind} {t.name or '(anon)'} has no alignment")


def _element(t: Type) -> Type:
    """What an object of type ``t`` is made of: qualifiers, typedefs and arrays skipped."""
    for _ in range(qualifier_chain_limit):
        t = underlying(t)
        if not isinstance(t, Array):
            return t
        t = t.type
    raise BTFError(f"array chain too long or looping at {t!r}")


def composite_layout(root: Type, memo: Layouts) -> Tuple[int, bool]:
    """``(alignment, packed)`` of a struct or union, memoised in ``memo``
    (keyed by ``id``).  Iterative over by-value members, so deep nesting
    cannot exhaust the stack, and linear in the members reached."""
    got = memo.get(id(root))
    if got is not None:
        return got
    stack: List[Type] = [root]
    on_path = set()
    while stack:
        cur = stack[-1]
        key = id(cur)
        if key in memo:
            stack.pop()
            continue
        assert isinstance(cur, (Struct, Union))
        elems = [_element(m.type) for m in cur.members]
        pending = [e for e in elems if isinstance(e, (Struct, Union)) and id(e) not in memo]
        if pending:
            if key in on_path or any(id(e) in on_path for e in pending):
                raise BTFError(f"{cur.kind} {cur.name or '(anon)'} contains itself by value")
            on_path.add(key)
            stack.extend(pending)
            continue
        best = 1
        packed = False
        for m, e in zip(cur.members, elems):
            if isinstance(e, (Struct, Union)):
                a = memo[id(e)][0]
            elif isinstance(e, (Int, Enum, Float)):
                a = max(1, min(e.size, 16))
            elif isinstance(e, Pointer):
                a = POINTER_SIZE
            else:
                continue
            if not m.bitfield_size and m.offset % (8 * a):
                packed = True
            best = max(best, a)
        if cur.size % best:
            packed = True
        memo[key] = (1 if packed else best, packed)
        on_path.discard(key)
        stack.pop()
    return memo[id(root)]


def _graph_equal(a: Type, b: Type) -> bool:
    """Structural equality of two type graphs (a bisimulation check)."""
    assumed = set()
    work: List[Tuple[Type, Type]] = [(a, b)]
    while work:
        x, y = work.pop()
        if x is y:
            continue
        key = (id(x), id(y))
        if key in assumed:
            continue
        assumed.add(key)
        if type(x) is not type(y) or x._shallow() != y._shallow():
            return False
        cx, cy = x._children(), y._children()
        if len(cx) != len(cy):
            return False
        work.extend(zip(cx, cy))
    return True


def walk(root: Type) -> Iterator[Type]:
    """Every type reachable from ``root`` once, depth first (cycle safe)."""
    seen = set()
    stack = [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        yield t
        stack.extend(reversed(t._children()))


__all__.append("walk")
