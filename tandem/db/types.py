"""Column types for on-chain integers: uint256 and int256 stored exactly, never as floats.

PostgreSQL keeps them as ``NUMERIC(78, 0)`` (every uint256 fits in 78 digits), so SQL can sum and
compare them. SQLite has no exact type that wide (its NUMERIC falls back to a float above 2**63),
so there they are decimal strings, read back as ``int``: sum them in Python, not in SQL.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine

DIGITS = 78  # len(str(2**256 - 1))


class ExactInt(TypeDecorator[int]):
    """An on-chain integer, exactly: ``Uint256`` or ``Int256``."""

    impl = String(DIGITS + 1)
    cache_ok = True
    signed = False

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(DIGITS, 0))
        return dialect.type_descriptor(String(DIGITS + 1))

    def checked(self, value: Any) -> int:
        """``value`` if this column can hold it; a clear error otherwise. (``COPY`` takes the
        checked int as it is: its text is the number's.)"""
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{type(self).__name__} takes an int, not {value!r}")
        if not self.signed and value < 0:
            raise ValueError(f"{type(self).__name__} cannot hold a negative value ({value})")
        return value

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = self.checked(value)
        return Decimal(value) if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class Uint256(ExactInt):
    """A token amount, price or share count: any uint256, exactly."""

    cache_ok = True


class Int256(ExactInt):
    """A signed on-chain integer (a feed's answer, a change of shares), exactly."""

    cache_ok = True
    signed = True


class OrderedInt256(TypeDecorator[int]):
    """A signed amount that SQL sorts by (a ranking's P&L or AUM), exact on every backend.

    PostgreSQL: ``NUMERIC(78, 0)``. SQLite: a fixed-width string whose text order is the numbers'
    order, since the plain decimal strings of ``Int256`` sort as text ("9" after "10"):
    ``0`` and 78 zero-padded digits for zero and above, ``-`` and the 78 digits of ``10**78 + v``
    below zero (nearer zero, larger), and "-" sorts before "0".
    """

    impl = String(DIGITS + 1)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(DIGITS, 0))
        return dialect.type_descriptor(String(DIGITS + 1))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{type(self).__name__} takes an int, not {value!r}")
        if not -_SPAN < value < _SPAN:
            raise ValueError(f"{type(self).__name__} holds less than 78 digits, not {value}")
        if dialect.name == "postgresql":
            return Decimal(value)
        if value >= 0:
            return f"{_POSITIVE}{value:0{DIGITS}d}"
        return f"{_NEGATIVE}{_SPAN + value:0{DIGITS}d}"

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, str) and value[:1] in (_POSITIVE, _NEGATIVE):
            digits = int(value[1:])
            return digits if value[0] == _POSITIVE else digits - _SPAN
        return int(value)


_SPAN = 10**DIGITS
# In text order "0" (48) sorts after "-" (45): every negative value before every other one.
_NEGATIVE = "-"
_POSITIVE = "0"
