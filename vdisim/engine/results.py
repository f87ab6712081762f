"""What a statement returns besides messages: rowsets (RESTORE HEADERONLY etc.)."""

from __future__ import annotations

from typing import Any

import attrs

# Column type names follow SQL Server's (nvarchar, int, bigint, numeric(25,0), tinyint, bit,
# smallint, datetime, uniqueidentifier, varbinary).  The TDS endpoint maps them to wire types.


@attrs.frozen
class Column:
    name: str
    sql_type: str


@attrs.frozen
class Rowset:
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": [[c.name, c.sql_type] for c in self.columns],
            "rows": [list(r) for r in self.rows],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Rowset:
        return cls(
            tuple(Column(str(n), str(t)) for n, t in d["columns"]),
            tuple(tuple(r) for r in d["rows"]),
        )

    def dicts(self) -> list[dict[str, Any]]:
        names = [c.name for c in self.columns]
        return [dict(zip(names, r, strict=True)) for r in self.rows]
