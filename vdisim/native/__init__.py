"""vdisim's drop-in ``libsqlvdi.so``: the Linux VDI client API in C++ over vdisim's wire
protocol (docs/native.md).  The sources, header, symbol list and sqlcmd shim are package data;
:mod:`vdisim.native.build` compiles them with g++ on demand (``vdisim build-libsqlvdi``)."""
