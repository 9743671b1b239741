"""Typed views of maps and globals, for type checkers (and skeletons).

``TypedMap[K, V]`` is a :class:`~ebpf.Map` whose keys are ``K`` and values
``V`` as far as mypy or pyright can tell: ``m[k] = v`` with a value of the
wrong type is a type error.  At run time it *is* a ``Map`` (the element
methods are the same functions, no wrapper in between); the types are a
promise the map's BTF keeps, which is why skeletons made by
``python -m ebpf gen`` use it with the classes they generate from that BTF.

``ReadOnlyVariable[T]`` and ``TypedVariable[T]`` wrap a loaded global
(:class:`ebpf.Variable`): ``get() -> T``, and for writable sections
``set(T)``.
"""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
    cast,
    overload,
)

from .collection import Variable
from .maps import Map
from .types import UpdateFlags

if TYPE_CHECKING:
    from .btf import Type as BTFType

__all__ = ["TypedMap", "ReadOnlyVariable", "TypedVariable"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
_D = TypeVar("_D")
_TM = TypeVar("_TM", bound="TypedMap[Any, Any]")


class TypedMap(Map, Generic[K, V]):
    """A :class:`~ebpf.Map` with keys of type ``K`` and values of type ``V``.

    Create one like a Map (``TypedMap[int, Event](spec)``) or take over the
    handle of an existing one with :meth:`from_map`.  Per-CPU maps have
    ``V = List[...]`` (one value per possible CPU), queues and stacks
    ``K = None``, program arrays ``V = Program``.
    """

    @classmethod
    def from_map(cls: Type[_TM], m: Map, *, key: Optional[BTFType] = None, value: Optional[BTFType] = None) -> _TM:
        """Take over ``m``'s file descriptor: ``m`` is closed afterwards and
        the returned map is the same kernel object (and keeps its pin).

        ``key``/``value`` are BTF types to decode with where ``m`` has none
        (say, a program array declared with ``__uint(key_size, 4)``).
        """
        spec = m.spec
        if key is not None and spec.key is None:
            spec.key = key
        if value is not None and spec.value is None:
            spec.value = value
        pinned = m.pinned_path
        new = cast(_TM, cls._from_fd(m.detach_fd(), spec))
        new._pinned_path = pinned
        m.close()
        return new

    # The element methods with K and V; at run time Map's own.  (Map is a
    # MutableMapping whose keys()/values()/items() are iterators and whose
    # update() also takes one mapping: hence the overrides.)
    if TYPE_CHECKING:
        def lookup(self, key: K = ..., flags: int = 0) -> V: ...

        @overload
        def get(self, key: K = ...) -> Optional[V]: ...

        @overload
        def get(self, key: K, default: _D) -> Union[V, _D]: ...

        @overload
        def get(self, key: K = ..., default: _D = ...) -> Union[V, _D]: ...

        def get(self, key: Any = None, default: Any = None) -> Any: ...

        def update(self, key: K, value: V, flags: int = UpdateFlags.ANY) -> None: ...  # type: ignore[override]

        def put(self, key: K, value: V) -> None: ...

        def delete(self, key: K) -> None: ...

        def lookup_and_delete(self, key: K = ...) -> V: ...

        def next_key(self, key: Optional[K] = None) -> Optional[K]: ...

        def __getitem__(self, key: K = ..., flags: int = 0) -> V: ...

        def __setitem__(self, key: K, value: V, flags: int = UpdateFlags.ANY) -> None: ...  # type: ignore[override]

        def __delitem__(self, key: K) -> None: ...

        def __iter__(self) -> Iterator[K]: ...

        def keys(self) -> Iterator[K]: ...  # type: ignore[override]

        def values(self) -> Iterator[V]: ...  # type: ignore[override]

        def items(self) -> Iterator[Tuple[K, V]]: ...  # type: ignore[override]

        def batch_lookup(
            self, cursor: Optional[bytes] = None, count: int = 4096
        ) -> Tuple[List[Tuple[K, V]], Optional[bytes]]: ...

        def batch_lookup_and_delete(
            self, cursor: Optional[bytes] = None, count: int = 4096
        ) -> Tuple[List[Tuple[K, V]], Optional[bytes]]: ...

        def batch_update(self, keys: Sequence[K], values: Sequence[V], flags: int = UpdateFlags.ANY) -> int: ...

        def batch_delete(self, keys: Sequence[K]) -> int: ...


class ReadOnlyVariable(Generic[T]):
    """A global of a loaded object whose value is a ``T`` (``.rodata``,
    ``.kconfig``: fixed at load, set them before loading)."""

    __slots__ = ("_var",)

    def __init__(self, var: Variable) -> None:
        self._var = var

    @property
    def name(self) -> str:
        return self._var.name

    @property
    def size(self) -> int:
        """Size in bytes."""
        return self._var.size

    @property
    def read_only(self) -> bool:
        return self._var.read_only

    @property
    def variable(self) -> Variable:
        """The untyped :class:`ebpf.Variable` underneath."""
        return self._var

    def get(self) -> T:
        """The value programs see now (decoded through BTF)."""
        return cast(T, self._var.get())

    def get_bytes(self) -> bytes:
        return self._var.get_bytes()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._var.name} in {self._var.map.name}>"


class TypedVariable(ReadOnlyVariable[T]):
    """A writable global (``.data``, ``.bss``) whose value is a ``T``."""

    __slots__ = ()

    def set(self, value: T) -> None:
        """Write ``value``; programs see it at once."""
        self._var.set(value)
