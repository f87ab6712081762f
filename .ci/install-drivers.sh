#!/usr/bin/env bash
# Installs the real SQL Server drivers that tests/test_tds_drivers.py runs against vdisim's
# TDS endpoint (docs/tds.md).  Called by .ci/run before the tests; safe to run again.
#   Debian: libltdl7 (needed by Microsoft ODBC Driver 18), libjtds-java (jTDS 1.3.1)
#   PyPI:   python-tds + pyOpenSSL (TLS), pymssql (FreeTDS), mssql-python (ODBC Driver 18)
#   npm:    tedious@18 (19+ needs a newer Node than Debian 12's) into build/tds-drivers
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_pkgs=(libltdl7 libjtds-java)
command -v javac >/dev/null || apt_pkgs+=(default-jdk-headless)
command -v npm >/dev/null || apt_pkgs+=(nodejs npm)
command -v openssl >/dev/null || apt_pkgs+=(openssl)
if command -v apt-get >/dev/null; then
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

python3 -m pip install -q 'python-tds' 'pyOpenSSL' 'pymssql' 'mssql-python'

mkdir -p build/tds-drivers
npm install --silent --no-audit --no-fund --prefix build/tds-drivers 'tedious@18'

echo "drivers: python-tds $(python3 -c 'import importlib.metadata as m; print(m.version("python-tds"))')," \
     "pymssql $(python3 -c 'import importlib.metadata as m; print(m.version("pymssql"))')," \
     "mssql-python $(python3 -c 'import importlib.metadata as m; print(m.version("mssql-python"))')," \
     "tedious $(node -p 'require("./build/tds-drivers/node_modules/tedious/package.json").version')," \
     "jTDS $(dpkg-query -W -f='${Version}' libjtds-java)"
