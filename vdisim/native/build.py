"""Build vdisim's drop-in ``libsqlvdi.so`` (and the native example clients) with g++.

``vdisim build-libsqlvdi [--out DIR]`` compiles ``src/libsqlvdi.cpp`` against vdisim's own
``include/vdi.h`` into ``DIR/libsqlvdi.so``, exporting exactly the 19 symbols listed in
``symbols.txt`` (a linker version script hides everything else).  g++ is needed by this command
only, never to install vdisim.  See docs/native.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

__all__ = ["BuildError", "build", "build_example", "examples", "native_dir", "register", "symbols",
           "write_shims"]

CXXFLAGS = ["-O2", "-pthread", "-std=c++17", "-Wall", "-Wextra"]
DEFAULT_OUT = "vdisim-native"


class BuildError(Exception):
    """The compiler is missing or failed (the message says which and why)."""


def native_dir() -> Path:
    """Where the C++ sources, header and symbol list live (package data)."""
    return Path(str(resources.files("vdisim.native")))


def symbols() -> list[str]:
    """The 19 mangled names every libsqlvdi.so exports (``symbols.txt``)."""
    text = (native_dir() / "symbols.txt").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not cxx or not shutil.which(cxx):
        raise BuildError("g++ not found: `vdisim build-libsqlvdi` needs a C++ compiler "
                         "(Debian/Ubuntu: apt-get install g++; or set $CXX)")
    return cxx


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.strip()}")


def build(out_dir: str | os.PathLike[str] = DEFAULT_OUT) -> dict[str, Path]:
    """Compile ``libsqlvdi.so`` into ``out_dir``.  Returns ``{"library": path, "include":
    header dir, "symbols": symbol list}``.  Raises :class:`BuildError`."""
    cxx = _compiler()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = native_dir()
    script = out / "libsqlvdi.map"
    script.write_text("{\n  global:\n" + "".join(f"    {s};\n" for s in symbols())
                      + "  local: *;\n};\n")
    lib = out / "libsqlvdi.so"
    tmp = out / "libsqlvdi.so.tmp"
    _run([cxx, "-shared", "-fPIC", *CXXFLAGS, f"-I{src / 'include'}",
          f"-Wl,--version-script={script}", "-Wl,-soname,libsqlvdi.so",
          "-o", str(tmp), str(src / "src" / "libsqlvdi.cpp")])
    os.replace(tmp, lib)  # atomic: a running process keeps its mapping of the old file
    return {"library": lib, "include": src / "include", "symbols": src / "symbols.txt",
            "shims": write_shims(out)}


def write_shims(out_dir: str | os.PathLike[str]) -> Path:
    """``DIR/shims/sqlcmd``: the sqlcmd shim bound to this Python (put the directory first on
    PATH; the statements go to ``$VDISIM_ENGINE``)."""
    shims = Path(out_dir) / "shims"
    shims.mkdir(parents=True, exist_ok=True)
    script = shims / "sqlcmd"
    script.write_text("#!/bin/sh\n# vdisim's sqlcmd (docs/native.md): statements go to "
                      "$VDISIM_ENGINE\n"
                      f'exec {shlex.quote(sys.executable)} -m vdisim.native.sqlcmd "$@"\n')
    script.chmod(0o755)
    return shims


def build_example(name: str, out_dir: str | os.PathLike[str], lib_dir: str | os.PathLike[str]
                  ) -> Path:
    """Compile ``examples/<name>.cpp`` against vdisim's header, linked with ``-lsqlvdi`` from
    ``lib_dir`` the way Microsoft's Linux sample links (it finds the library at run time
    through LD_LIBRARY_PATH, not an rpath)."""
    cxx = _compiler()
    src = native_dir()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exe = out / name
    _run([cxx, *CXXFLAGS, f"-I{src / 'include'}", "-o", str(exe),
          str(src / "examples" / f"{name}.cpp"), f"-L{lib_dir}", "-lsqlvdi", "-lpthread"])
    return exe


def examples() -> list[str]:
    return sorted(p.stem for p in (native_dir() / "examples").glob("*.cpp"))


def _main(args: argparse.Namespace) -> int:
    try:
        paths = build(args.out)
        if args.examples:
            for name in examples():
                paths[name] = build_example(name, args.out, args.out)
    except BuildError as exc:
        print(f"vdisim build-libsqlvdi: {exc}")
        return 2
    for what, path in paths.items():
        print(f"{what}: {path}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build-libsqlvdi",
                       help="build vdisim's drop-in libsqlvdi.so with g++ (docs/native.md)")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"output directory (default ./{DEFAULT_OUT})")
    p.add_argument("--examples", action="store_true",
                   help="also build the native example clients (examples/*.cpp)")
    p.set_defaults(func=_main)
