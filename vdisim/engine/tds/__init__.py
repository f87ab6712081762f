"""A TDS endpoint for the emulated engine: real SQL Server drivers connect to vdisim.

Sans-I/O codec: :mod:`packets` (framing), :mod:`prelogin`, :mod:`login` (LOGIN7 and the login
response), :mod:`tokens`, :mod:`types`, :mod:`requests` (SQLBatch, RPC, transaction manager).
I/O: :mod:`tls` (PRELOGIN-wrapped, login-only and TDS 8 strict TLS over ``ssl.MemoryBIO``)
and :mod:`endpoint` (the listener in the engine process).  docs/tds.md.
"""
