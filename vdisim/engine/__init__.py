"""The emulated SQL Server engine."""

from vdisim.engine.connection import Connection, Engine, Result
from vdisim.engine.plan import Fault, Plan
from vdisim.engine.sqlerrors import SqlError, SqlMessage

__all__ = ["Connection", "Engine", "Fault", "Plan", "Result", "SqlError", "SqlMessage"]
