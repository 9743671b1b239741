"""Generate typed skeletons: a Python module per BPF object.

``python -m ebpf gen OBJ -o obj_skel.py`` (or :func:`generate` from a
script) writes, like ``bpftool gen skeleton``, bpf2go and libbpf-cargo do
for C, Go and Rust:

* one class per BTF struct, union and enum that the object's maps and
  globals use (and those ``--type`` names, such as a ring buffer's event
  struct), with typed fields: ``int``, ``float``, ``bool``, ``bytes``,
  nested classes, lists.  Map lookups and globals decode into them (the
  module binds them to the object's BTF when it loads it);
* an ``Objects`` class with a typed attribute per map
  (``TypedMap[K, V]``), program (``Program``) and global
  (``TypedVariable[T]``, ``ReadOnlyVariable[T]`` for ``.rodata``), plus
  ``close()``, the context manager and ``attach()``;
* ``load(*, path=None, spec=None, pin_path=None, kernel_types=None,
  <global>=...)`` and ``load_spec(path=None)``.

Names follow the C names.  Where a Python name would clash (two kinds
sharing a tag, a keyword, a builtin the module uses, a field named like a
base-class method, ``__mangled`` names), the class gets its kind as prefix
(``struct_x``, ``enum_x``) and an attribute a trailing underscore
(``from_``) or a single leading one (``__pad`` -> ``_pad``); the value
itself keeps the C name (``_asdict()``, ``repr``).  The output depends only
on the object's bytes and the options: the same object gives the same
module.
"""

from __future__ import annotations

import base64
import hashlib
import keyword
import os
import re
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

from .btf import types as T
from .btf.codec import Field, fields, value_shape
from .btf.format import declarator
from .errors import EBPFError
from .maps import PER_CPU_TYPES
from .skeleton import Objects, Struct, index_key_type, layout_digest, load_spec, public_variables
from .spec import CollectionSpec, MapSpec
from .types import MapType

__all__ = ["generate", "GenerateError"]


class GenerateError(EBPFError, ValueError):
    """The skeleton cannot be generated (an unknown ``--type``, say)."""


# Maps whose elements user space reads and writes: typed as TypedMap[K, V].
# The others (ring buffers, perf event arrays, socket maps, struct_ops...)
# are plain Maps: their values are fds or not readable at all.
_TYPED_MAPS = frozenset(
    {
        MapType.HASH, MapType.ARRAY, MapType.PROG_ARRAY, MapType.PERCPU_HASH, MapType.PERCPU_ARRAY,
        MapType.STACK_TRACE, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH, MapType.LPM_TRIE,
        MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS, MapType.DEVMAP, MapType.DEVMAP_HASH,
        MapType.CPUMAP, MapType.QUEUE, MapType.STACK, MapType.SK_STORAGE, MapType.INODE_STORAGE,
        MapType.TASK_STORAGE, MapType.CGRP_STORAGE, MapType.BLOOM_FILTER, MapType.CGROUP_STORAGE,
        MapType.PERCPU_CGROUP_STORAGE,
    }
)
_KEYLESS = frozenset({MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER})
_MAP_VALUED = frozenset({MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS})
_READ_ONLY_SECTION = re.compile(r"^\.rodata(\..*)?$|^\.kconfig$")

# Module-level names of the generated module (imports and its own); class
# names and load() keywords avoid them.
_MODULE_NAMES = frozenset(
    {"ebpf", "load", "load_spec", "Objects", "OBJECT_NAME", "OBJECT_FILE", "OBJECT_SHA256",
     "_t", "_b", "_os", "_enum", "_skel", "_b64decode", "_TYPES", "_OBJECT", "_source"}
)
# Builtins the generated code calls or names; nothing else is shadowed.
_BUILTINS_USED = frozenset({"int", "float", "bool", "bytes", "range", "property", "getattr", "setattr", "super",
                            "object", "type", "str", "None"})
# Names the bases give instances and classes.
_STRUCT_NAMES = frozenset(set(dir(Struct)) | {"_fields", "_codec", "__slots__", "__dict__"})
_OBJECTS_NAMES = frozenset(set(dir(Objects)) | {"_ebpf_owned", "_ebpf_links", "__dict__"})
# load()'s own keywords, and the local its body builds the globals into.
_LOAD_KEYWORDS = frozenset({"path", "spec", "pin_path", "kernel_types", "variables"})
# Enumerator names IntEnum refuses or gives another meaning.
_ENUM_RESERVED = frozenset({"name", "value", "mro"})


def generate(
    source: Union[str, "os.PathLike[str]", bytes],
    *,
    name: Optional[str] = None,
    embed: bool = False,
    types: Sequence[str] = (),
    object_file: Optional[str] = None,
    version: Optional[str] = None,
) -> str:
    """The source of a typed skeleton module for the object ``source``.

    ``name`` is the object name (the kernel names data-section maps
    ``<name>.bss``...; default: the file name up to its first dot).
    ``embed`` puts the object's bytes into the module; otherwise ``load()``
    reads ``object_file`` (default: the object's file name) from the
    module's directory.  ``types`` names more C types to generate classes
    for: ``"event"``, ``"struct event"``, ``"union u"``, ``"enum e"`` or a
    typedef name.  ``version`` is what the header says made it (default:
    this package's version).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        file_name = object_file or f"{name or 'bpf'}.o"
    else:
        path = os.fspath(source)
        with open(path, "rb") as f:
            data = f.read()
        file_name = object_file or os.path.basename(path)
    obj_name = name or _default_name(file_name)
    if not re.fullmatch(r"[A-Za-z0-9_]+", obj_name):
        raise GenerateError(f"object name {obj_name!r}: use letters, digits and underscores")
    spec = load_spec(data, name=obj_name)
    return _Generator(spec, data, file_name, obj_name, name is not None, embed, sorted(set(types)),
                      version or _package_version()).module()


def _default_name(file_name: str) -> str:
    base = file_name.split(".", 1)[0] or "bpf"
    return re.sub(r"[^A-Za-z0-9_]", "_", base)


def _package_version() -> str:
    from ._version import __version__

    return __version__


def _c_type(t: T.Type) -> str:
    """A short C spelling of ``t`` for comments (anonymous bodies elided)."""
    real = T.underlying(t)
    if isinstance(real, (T.Struct, T.Union, T.Enum)) and not real.name and not isinstance(t, T.Typedef):
        return f"{real.kind} (anonymous)"
    try:
        text = declarator(t)
    except Exception:
        return real.kind
    text = re.sub(r"\{[^{}]*\}", "{...}", " ".join(text.split()))
    return text if len(text) <= 60 else text[:57] + "..."


def _typedef_name(t: T.Type) -> str:
    """The first typedef name on the way from ``t`` to its underlying type."""
    for _ in range(T.qualifier_chain_limit):
        if isinstance(t, T.Typedef):
            return t.name
        if isinstance(t, (T.Const, T.Volatile, T.Restrict, T.TypeTag)):
            t = t.type
            continue
        return ""
    return ""


def _unique(name: str, taken: Set[str]) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


class _Class:
    """One generated class: a struct, union or enum of the object's BTF."""

    def __init__(self, t: T.Type, hint: str, typedef: str, root: Optional[Tuple[str, str]]) -> None:
        self.type = t
        self.kind = t.kind if isinstance(t, (T.Struct, T.Union)) else "enum"
        self.hint = hint
        self.typedef = typedef
        self.root = root
        self.name = ""
        self.fields: List[Field] = fields(t) if isinstance(t, (T.Struct, T.Union)) else []
        # Python attribute and __init__ parameter of each field (by C name).
        self.attrs: Dict[str, str] = {}
        self.params: Dict[str, str] = {}
        self.nested: Dict[str, "_Class"] = {}


class _Generator:
    def __init__(self, spec: CollectionSpec, data: bytes, file_name: str, obj_name: str, named: bool,
                 embed: bool, extra: List[str], version: str) -> None:
        self.spec = spec
        self.data = data
        self.file_name = file_name
        self.obj_name = obj_name
        self.named = named
        self.embed = embed
        self.extra = extra
        self.version = version
        self.classes: Dict[int, _Class] = {}
        self.order: List[_Class] = []
        self.visiting: Set[int] = set()
        self.aliases: Dict[str, str] = {}  # class name -> module-level alias
        self.builtins_alias = False
        self._attrs: Optional[Dict[str, Dict[str, str]]] = None
        self.maps = {k: ms for k, ms in sorted(spec.maps.items()) if not ms.is_data_section}
        self.programs = dict(sorted(spec.programs.items()))
        self.variables = {n: spec.variables[n] for n in public_variables(spec)}

    # -- discovery -------------------------------------------------------------

    def discover(self) -> None:
        for mname, ms in self.maps.items():
            if ms.type not in _TYPED_MAPS:
                continue
            if ms.key is not None and ms.type not in _KEYLESS:
                self.visit(ms.key, f"{mname}_key", ("map_key", mname))
            if ms.value is not None and ms.type not in _MAP_VALUED and ms.type != MapType.PROG_ARRAY:
                self.visit(ms.value, f"{mname}_value", ("map_value", mname))
        for vname, vs in self.variables.items():
            self.visit(vs.type.type, f"{vname}_type", ("var", vname))
        for ctype in self.extra:
            t = self.lookup(ctype)
            self.visit(t, ctype.split()[-1], None)

    def lookup(self, ctype: str) -> T.Type:
        words = ctype.split()
        kinds = {"struct", "union", "enum"}
        if len(words) == 2 and words[0] in kinds:
            kind: Optional[str] = words[0]
            cname = words[1]
        elif len(words) == 1:
            kind, cname = None, words[0]
        else:
            raise GenerateError(f"--type {ctype!r}: write NAME, 'struct NAME', 'union NAME' or 'enum NAME'")
        if self.spec.types is None:
            raise GenerateError(f"--type {ctype}: the object has no BTF (compile it with clang -g)")
        found: List[T.Type] = self.spec.types.types_by_name(cname, kind)
        if kind is None:
            found = [t for t in found if isinstance(t, (T.Struct, T.Union, T.Enum, T.Typedef))]
        if not found:
            raise GenerateError(
                f"--type {ctype}: no such type in the object's BTF (clang records only types that globals, "
                f"maps and function prototypes use: pass the value to a function, or declare a global of it)"
            )
        if kind is None and len(found) > 1:
            # C keeps struct, union, enum tags and typedef names apart.
            kinds_found = sorted({t.kind for t in found})
            raise GenerateError(f"--type {ctype}: several types have that name ({', '.join(kinds_found)}): "
                                f"say which, e.g. 'struct {cname}'")
        if len(found) > 1:
            raise GenerateError(f"--type {ctype}: the object has {len(found)} types of that name")
        real = T.underlying(found[0])
        if not isinstance(real, (T.Struct, T.Union, T.Enum)):
            raise GenerateError(f"--type {ctype}: it is a {real.kind}; only structs, unions and enums become classes")
        return found[0]

    def visit(self, t: T.Type, hint: str, root: Optional[Tuple[str, str]]) -> None:
        try:
            shape, inner, _ = value_shape(t)
        except TypeError:
            return
        if shape == "list":
            assert inner is not None
            self.visit(inner, hint, None)
            return
        if shape not in ("struct", "enum"):
            return
        assert inner is not None
        real = inner
        known = self.classes.get(id(real))
        if known is not None:
            if known.root is None:
                known.root = root
            if not known.typedef:
                known.typedef = _typedef_name(t)
            return
        if id(real) in self.visiting:
            raise GenerateError(f"{real.kind} {real.name or hint} contains itself")
        self.visiting.add(id(real))
        c = _Class(real, hint, _typedef_name(t), root)
        for f in c.fields:
            self.visit(f.type, f"{c.typedef or real.name or hint}_{f.name}", None)
        self.visiting.discard(id(real))
        self.classes[id(real)] = c
        self.order.append(c)

    # -- naming -----------------------------------------------------------------

    def name_classes(self) -> None:
        taken = set(_MODULE_NAMES) | set(_BUILTINS_USED) | set(keyword.kwlist)

        def base(c: _Class) -> str:
            return c.type.name or c.typedef or c.hint

        counts: Dict[str, int] = {}
        for c in self.order:
            counts[base(c)] = counts.get(base(c), 0) + 1
        for c in self.order:
            b = base(c)
            # C keeps tags (struct x) apart from typedef names (x): on a
            # clash the tag takes its kind as prefix, as C spells it.
            if (counts[b] > 1 and c.type.name) or b in taken or b.startswith("__") or not b.isidentifier():
                b = f"{c.kind}_{b}" if c.type.name else f"{b}_t"
            c.name = _unique(re.sub(r"\W", "_", b), taken)
        for c in self.order:
            reserved = set(_STRUCT_NAMES)
            for f in c.fields:
                c.attrs[f.name] = _attr_name(f.name, reserved, {g.name for g in c.fields})
            # A parameter must not hide what __init__'s body calls.
            params = {"self"}
            for f in c.fields:
                expr, fresh = self.default(f.type)
                if fresh and not f.in_union:
                    params |= set(re.findall(r"[A-Za-z_]\w*", expr))
            for f in c.fields:
                p = c.attrs[f.name]
                c.params[f.name] = _unique(p, params)
            for f in c.fields:
                sub = self.classes.get(id(_element(f.type)))
                if sub is not None:
                    c.nested[f.name] = sub

    def locator(self, c: _Class) -> Optional[Tuple[str, str]]:
        types = self.spec.types
        assert types is not None
        if c.type.name and len(types.types_by_name(c.type.name, c.kind)) == 1:
            return (c.kind, c.type.name)
        if c.typedef and len(types.types_by_name(c.typedef, "typedef")) == 1:
            return ("typedef", c.typedef)
        return c.root

    # -- annotations ------------------------------------------------------------

    def annotation(self, t: Optional[T.Type], scope: Set[str]) -> str:
        """The Python type of values of ``t`` as written in a class body
        whose own names are ``scope`` (names there shadow module names)."""
        if t is None:
            return self.builtin("bytes", scope)
        shape, inner, _ = value_shape(t)
        if shape in ("int", "bool", "float"):
            return self.builtin(shape, scope)
        if shape == "enum":
            return self.builtin("int", scope)
        if shape in ("bytes", "cstr"):
            return self.builtin("bytes", scope)
        if shape == "list":
            return f"_t.List[{self.annotation(inner, scope)}]"
        assert inner is not None
        return self.class_ref(self.classes[id(inner)].name, scope)

    def builtin(self, name: str, scope: Set[str]) -> str:
        if name in scope:
            self.builtins_alias = True
            return f"_b.{name}"
        return name

    def class_ref(self, name: str, scope: Set[str]) -> str:
        if name in scope:
            alias = self.aliases.setdefault(name, f"_{name}_type")
            return alias
        return name

    def default(self, t: T.Type) -> Tuple[str, bool]:
        """Zero value of a field: (expression, whether it is built per instance)."""
        shape, inner, n = value_shape(t)
        if shape == "int" or shape == "enum":
            return "0", False
        if shape == "bool":
            return "False", False
        if shape == "float":
            return "0.0", False
        if shape == "cstr" or (shape == "bytes" and n == 0):
            return 'b""', False
        if shape == "bytes":
            return f'b"\\0" * {n}', False
        if shape == "list":
            assert inner is not None
            expr, fresh = self.default(inner)
            if not fresh:
                return f"[{expr}] * {n}", True
            return f"[{expr} for _ in range({n})]", True
        assert inner is not None
        return f"{self.classes[id(inner)].name}()", True

    # -- output --------------------------------------------------------------------

    def module(self) -> str:
        self.discover()
        self.name_classes()
        body: List[str] = []
        for c in self.order:
            body += self.emit_class(c)
        table = self.emit_types()
        objects = self.emit_objects()
        load = self.emit_load()
        source = self.emit_source()
        # Known only now: which class names a class body shadows, and
        # whether a builtin needs its qualified name.
        aliases = [f"{alias} = {name}" for name, alias in sorted(self.aliases.items())]
        if aliases:
            aliases += ["", ""]
        head = self.emit_head()
        return "\n".join(head + body + aliases + table + objects + load + source).rstrip() + "\n"

    def emit_head(self) -> List[str]:
        digest = hashlib.sha256(self.data).hexdigest()
        opts = []
        if self.named:
            opts.append(f"--name {self.obj_name}")
        opts += [f"--type {_shell_word(t)}" for t in self.extra]
        if self.embed:
            opts.append("--embed")
        lines = [
            f"# Code generated by `python -m ebpf gen` (ebpf {self.version}); DO NOT EDIT.",
            f"# Object: {self.file_name} (sha256 {digest})",
        ]
        if opts:
            lines.append(f"# Options: {' '.join(opts)}")
        lines += [
            f'"""Typed skeleton of the BPF object ``{self.file_name}``.',
            "",
            ":func:`load` returns :class:`Objects`, its maps, programs and globals as typed",
            "attributes (``with load() as objs: ...``); the classes below are its structs, unions",
            "and enums, into which maps and globals decode.",
            '"""',
            "",
            "from __future__ import annotations",
            "",
        ]
        if self.builtins_alias:
            lines.append("import builtins as _b")
        lines += [
            "import enum as _enum",
            "import os as _os",
            "import typing as _t",
            "from base64 import b64decode as _b64decode",
            "",
            "import ebpf",
            "import ebpf.btf",
            "import ebpf.spec",
            "import ebpf.typed",
            "from ebpf import skeleton as _skel",
            "",
            f"OBJECT_NAME = {self.obj_name!r}",
            '"""The object name: the kernel calls data-section maps ``<name>.bss`` and so on (cut to fit)."""',
            f"OBJECT_FILE = {self.file_name!r}",
            '"""The object file ``load()`` reads (from this module\'s directory) when not embedded."""',
            f"OBJECT_SHA256 = {digest!r}",
            '"""SHA-256 of the object this module was generated from."""',
            "",
            "",
        ]
        return lines

    def emit_class(self, c: _Class) -> List[str]:
        if c.kind == "enum":
            return self.emit_enum(c)
        t = c.type
        assert isinstance(t, (T.Struct, T.Union))
        label = f"{t.kind} {t.name}" if t.name else (f"{t.kind} (anonymous, typedef {c.typedef})" if c.typedef
                                                     else f"{t.kind} (anonymous)")
        slotted = all(not f.name.startswith("__") and f.name not in _STRUCT_NAMES for f in c.fields)
        scope = set(c.attrs.values()) | {"_fields", "__slots__"}
        out = [f"class {c.name}(_skel.Struct):", f'    """``{label}`` ({t.size} bytes)."""', ""]
        names = tuple(f.name for f in c.fields)
        if slotted:
            out += _assign("__slots__", _tuple(names))
        out += _assign("_fields", _tuple(names))
        if c.fields:
            out.append("")
        aliased: List[Tuple[Field, str]] = []
        for f in c.fields:
            ann = self.field_annotation(f, scope)
            attr = c.attrs[f.name]
            if attr != f.name:
                aliased.append((f, ann))
                continue
            out.append(f"    {attr}: {ann}")
            out.append(f'    """{self.field_doc(f)}"""')
        for f, ann in aliased:
            out.append("")
            attr = c.attrs[f.name]
            why = "a Python keyword" if keyword.iskeyword(f.name) else "renamed for Python"
            out += [
                "    @property",
                f"    def {attr}(self) -> {ann}:",
                f'        """``{f.name}`` ({why}): {self.field_doc(f)}"""',
                f"        return _t.cast({self.field_annotation(f, set())!r}, getattr(self, {f.name!r}))",
                "",
                f"    @{attr}.setter",
                f"    def {attr}(self, value: {ann}) -> None:",
                f"        setattr(self, {f.name!r}, value)",
            ]
        out += self.emit_init(c, scope)
        return out + ["", ""]

    def field_annotation(self, f: Field, scope: Set[str]) -> str:
        ann = self.annotation(f.type, scope)
        return f"_t.Optional[{ann}]" if f.in_union else ann

    def field_doc(self, f: Field) -> str:
        if f.bitfield_size == 1:
            where = f"bit {f.bit_offset}"
        elif f.bitfield_size:
            where = f"bits {f.bit_offset}..{f.bit_offset + f.bitfield_size - 1}"
        else:
            where = f"byte {f.bit_offset // 8}"
        extra = "; shares its bytes (None: not written)" if f.in_union else ""
        text = f"``{_c_type(f.type)}`` at {where}{extra}."
        return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')

    def emit_init(self, c: _Class, scope: Set[str]) -> List[str]:
        if not c.fields:
            return ["", "    def __init__(self) -> None:", "        pass"]
        params = []
        body = []
        for f in c.fields:
            p = c.params[f.name]
            ann = self.field_annotation(f, scope)
            attr = c.attrs[f.name]
            target = f"self.{attr}" if attr == f.name else None
            if f.in_union:
                params.append(f"{p}: {ann} = None")
                value = p
            else:
                expr, fresh = self.default(f.type)
                if fresh:
                    params.append(f"{p}: _t.Optional[{ann}] = None")
                    value = f"{expr} if {p} is None else {p}"
                else:
                    params.append(f"{p}: {ann} = {expr}")
                    value = p
            body.append(f"        {target} = {value}" if target else f"        setattr(self, {f.name!r}, {value})")
        out = ["", "    def __init__(", "        self,"]
        out += [f"        {p}," for p in params]
        out += ["    ) -> None:"]
        return out + body

    def emit_enum(self, c: _Class) -> List[str]:
        t = c.type
        assert isinstance(t, T.Enum)
        label = f"enum {t.name}" if t.name else "enum (anonymous)"
        out = [f"class {c.name}(_enum.IntEnum):", f'    """``{label}`` ({t.size} bytes)."""', ""]
        seen: Set[str] = set()
        members = 0
        for v in t.values:
            n = v.name
            if not n.isidentifier() or n in seen:
                continue
            seen.add(n)
            if keyword.iskeyword(n) or n in _ENUM_RESERVED or n.startswith("_"):
                out.append(f"    # {n} = {v.value} is not a valid member name here: it decodes as a plain int")
                continue
            out.append(f"    {n} = {v.value}")
            members += 1
        if not members:
            out.append("    pass")
        return out + ["", ""]

    def emit_types(self) -> List[str]:
        out = ["_TYPES: _t.Sequence[_skel.TypeEntry] = ("]
        for c in self.order:
            loc = self.locator(c)
            nested = ", ".join(f"{k!r}: {v.name}" for k, v in c.nested.items())
            out.append(f"    ({c.name}, {loc!r}, {layout_digest(c.type)!r}, {{{nested}}}),")
        out += [")", '"""How each class finds its type in the object\'s BTF, and the layout it expects."""', "", ""]
        return out

    def attr_names(self) -> Dict[str, Dict[str, str]]:
        """Python names of the maps, programs and globals (also the
        keywords of load() for globals)."""
        if self._attrs is not None:
            return self._attrs
        taken = set(_OBJECTS_NAMES) | {"ebpf", "_t", "_b"} | _LOAD_KEYWORDS | set(_MODULE_NAMES)
        out: Dict[str, Dict[str, str]] = {"map": {}, "program": {}, "variable": {}}
        everything = set(self.maps) | set(self.programs) | set(self.variables)
        for kind, names in (("map", self.maps), ("program", self.programs), ("variable", self.variables)):
            for n in names:
                out[kind][n] = _attr_name(n, taken, everything)
        self._attrs = out
        return out

    def emit_objects(self) -> List[str]:
        attrs = self.attr_names()
        scope = set()
        for table in attrs.values():
            scope |= set(table.values())
        scope |= {"_ebpf_maps", "_ebpf_programs", "_ebpf_variables"}
        out = [
            "class Objects(_skel.Objects):",
            f'    """The maps, programs and globals of ``{self.file_name}``, loaded by :func:`load`."""',
            "",
        ]
        for label, kind in (("_ebpf_maps", "map"), ("_ebpf_programs", "program"), ("_ebpf_variables", "variable")):
            items = [f"{a!r}: {n!r}" for n, a in attrs[kind].items()]
            out += _assign(label, "{" + ", ".join(items) + "}", items, "{}")
        for ms_name, ms in self.maps.items():
            out.append("")
            out.append(f"    {attrs['map'][ms_name]}: {self.map_annotation(ms, scope)}")
            out.append(f'    """{self.map_doc(ms)}"""')
        for pname, ps in self.programs.items():
            out.append("")
            out.append(f"    {attrs['program'][pname]}: ebpf.Program")
            t = ps.type.name if hasattr(ps.type, "name") else str(ps.type)
            out.append(f'    """{t} program ``{pname}`` (section ``{ps.section_name}``)."""')
        for vname, vs in self.variables.items():
            out.append("")
            wrapper = "ReadOnlyVariable" if _READ_ONLY_SECTION.match(vs.section) else "TypedVariable"
            ann = self.annotation(vs.type.type, scope)
            out.append(f"    {attrs['variable'][vname]}: ebpf.typed.{wrapper}[{ann}]")
            doc = f"``{_c_type(vs.type.type)} {vname}`` in ``{vs.section}``"
            if wrapper == "ReadOnlyVariable":
                doc += f": fixed at load, set it with ``load({attrs['variable'][vname]}=...)``"
            out.append(f'    """{doc}."""')
        out += ["", ""]
        return out

    def map_annotation(self, ms: MapSpec, scope: Set[str]) -> str:
        if ms.type not in _TYPED_MAPS:
            return "ebpf.Map"
        if ms.type in _KEYLESS:
            key = "None"
        elif ms.key is not None:
            key = self.annotation(ms.key, scope)
        elif index_key_type(self.spec, ms) is not None:
            key = self.builtin("int", scope)
        else:
            key = self.builtin("bytes", scope)
        if ms.type == MapType.PROG_ARRAY:
            value = "ebpf.Program"
        elif ms.type in _MAP_VALUED:
            value = "ebpf.Map"
        else:
            value = self.annotation(ms.value, scope)
            if ms.type in PER_CPU_TYPES:
                value = f"_t.List[{value}]"
        return f"ebpf.typed.TypedMap[{key}, {value}]"

    def map_doc(self, ms: MapSpec) -> str:
        t = ms.type.name if isinstance(ms.type, MapType) else str(ms.type)
        if ms.type in (MapType.RINGBUF, MapType.USER_RINGBUF):
            reader = "``ebpf.ringbuf.Reader``" if ms.type == MapType.RINGBUF else "``ebpf.ringbuf.Writer``"
            return f"{t} map ``{ms.name}`` ({ms.max_entries} bytes): use it with {reader}."
        if ms.type == MapType.PERF_EVENT_ARRAY:
            return f"{t} map ``{ms.name}``: read it with ``ebpf.perf.Reader``."
        key = _c_type(ms.key) if ms.key is not None else f"{ms.key_size} bytes"
        if ms.type in _KEYLESS:
            key = "no key"
        value = _c_type(ms.value) if ms.value is not None else f"{ms.value_size} bytes"
        if ms.type == MapType.PROG_ARRAY:
            value = "programs"
        elif ms.type in _MAP_VALUED:
            value = "maps"
        entries = "1 entry" if ms.max_entries == 1 else f"{ms.max_entries} entries"
        return f"{t} map ``{ms.name}``: {key} -> {value}, {entries}."

    def emit_load(self) -> List[str]:
        kws = self.attr_names()["variable"]  # one name per global: attribute and keyword
        out = [
            "def load_spec(path: _t.Union[str, \"_os.PathLike[str]\", None] = None) -> ebpf.spec.CollectionSpec:",
            f'    """The CollectionSpec of ``{self.file_name}`` (no kernel needed), this module\'s classes bound',
            "    to its types: edit it, then ``load(spec=...)``.  ``path`` reads another build of the object",
            '    (its types must match)."""',
            "    return _skel.load_spec(_source(path), _TYPES, name=OBJECT_NAME)",
            "",
            "",
            "def load(",
            "    *,",
            "    path: _t.Union[str, \"_os.PathLike[str]\", None] = None,",
            "    spec: _t.Optional[ebpf.spec.CollectionSpec] = None,",
            "    pin_path: _t.Optional[str] = None,",
            "    kernel_types: _t.Union[str, \"_os.PathLike[str]\", ebpf.btf.Spec, None] = None,",
        ]
        for vname, vs in self.variables.items():
            if vs.section == ".kconfig":
                continue
            out.append(f"    {kws[vname]}: _t.Optional[{self.annotation(vs.type.type, set())}] = None,")
        out += [
            ") -> Objects:",
            f'    """Load ``{self.file_name}`` into the kernel and return its :class:`Objects`.',
            "",
            "    Reads the object from ``spec`` (see :func:`load_spec`), else ``path``, else "
            + ("the bytes embedded in this module." if self.embed else "``OBJECT_FILE`` next to this module."),
            "    Globals given as keywords start with that value (None: as compiled); this is the only way",
            "    to set ``.rodata`` ones.  Loads only the maps, programs and globals :class:`Objects` names",
            "    (and what its programs use).  ``pin_path`` is the bpffs directory for pinned maps,",
            "    ``kernel_types`` BTF to use instead of the running kernel's for CO-RE.",
            '    """',
            "    if spec is None:",
            "        spec = load_spec(path)",
            "    else:",
            "        _skel.bind_types(spec, _TYPES)",
            "    variables: _t.Dict[str, _t.Any] = {",
        ]
        for vname, vs in self.variables.items():
            if vs.section == ".kconfig":
                continue
            out.append(f"        {vname!r}: {kws[vname]},")
        out += [
            "    }",
            "    return _skel.load_objects(",
            "        Objects, spec, pin_path=pin_path, kernel_types=kernel_types, variables=variables",
            "    )",
            "",
            "",
        ]
        return out

    def emit_source(self) -> List[str]:
        out = [
            "def _source(",
            "    path: _t.Union[str, \"_os.PathLike[str]\", None],",
            ") -> _t.Union[str, \"_os.PathLike[str]\", bytes]:",
        ]
        out += ["    if path is not None:", "        return path"]
        if self.embed:
            out.append("    return _b64decode(_OBJECT)")
        else:
            out.append("    return _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), OBJECT_FILE)")
        if self.embed:
            out += ["", "", "_OBJECT = ("]
            text = base64.b64encode(self.data).decode()
            for i in range(0, len(text), 76):
                out.append(f'    "{text[i:i + 76]}"')
            out.append(")")
        return out


def _element(t: T.Type) -> T.Type:
    real = T.underlying(t)
    while isinstance(real, T.Array):
        real = T.underlying(real.type)
    return real


def _attr_name(cname: str, reserved: Set[str], others: Set[str]) -> str:
    """The Python attribute for C name ``cname`` (unique among ``others``,
    the C names of the same scope, and the names chosen so far)."""
    py = re.sub(r"\W", "_", cname) or "_"
    if py[0].isdigit():
        py = "_" + py
    if keyword.iskeyword(py) or py in reserved:
        py += "_"
    elif py.startswith("__"):
        py = "_" + py.lstrip("_") if py.strip("_") else "_f"
    taken = reserved | (others - {cname})
    py = _unique(py, taken)
    reserved.add(py)
    return py


def _assign(name: str, value: str, items: Optional[List[str]] = None, brackets: str = "()") -> List[str]:
    """``name = value`` in a class body, one item per line when long."""
    line = f"    {name} = {value}"
    if len(line) <= 100:
        return [line]
    if items is None:
        items = [x.strip() for x in value[1:-1].split(",") if x.strip()]
    return [f"    {name} = {brackets[0]}"] + [f"        {x}," for x in items] + [f"    {brackets[1]}"]


def _tuple(names: Sequence[str]) -> str:
    if len(names) == 1:
        return f"({names[0]!r},)"
    return "(" + ", ".join(repr(n) for n in names) + ")"


def _shell_word(s: str) -> str:
    return f"'{s}'" if " " in s else s
