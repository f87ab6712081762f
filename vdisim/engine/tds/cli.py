"""``vdisim engine serve`` options of the TDS endpoint (docs/tds.md)."""

from __future__ import annotations

import argparse
import os

from vdisim.engine.tds.endpoint import TdsConfig
from vdisim.engine.tds.tls import generate_certificate

DEFAULT_ADDRESS = "127.0.0.1:0"


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TDS endpoint (docs/tds.md)")
    g.add_argument("--tds", nargs="?", const=DEFAULT_ADDRESS, metavar="HOST:PORT",
                   help="also listen for SQL Server drivers (TDS) at HOST:PORT "
                        f"(default {DEFAULT_ADDRESS}: loopback, a free port)")
    g.add_argument("--tds-cert", metavar="PEM", help="TLS certificate (enables TLS: "
                   "PRELOGIN-wrapped, login-only and TDS 8 strict)")
    g.add_argument("--tds-key", metavar="PEM", help="the certificate's private key")
    g.add_argument("--tds-generate-cert", action="store_true",
                   help="make a self-signed certificate for localhost if --tds-cert/--tds-key "
                        "(default: tds-cert.pem / tds-key.pem in the data directory) are "
                        "missing")
    g.add_argument("--tds-login", metavar="USER:PASSWORD",
                   help="accept only this login (a wrong one fails with 18456); default: "
                        "any login")
    g.add_argument("--tds-address-file", metavar="PATH",
                   help="write the endpoint's HOST:PORT to PATH once it listens")


def config_from_args(args: argparse.Namespace, data_dir: str) -> TdsConfig | None:
    if args.tds is None:
        return None
    cert, key = args.tds_cert, args.tds_key
    if args.tds_generate_cert:
        cert = cert or os.path.join(data_dir, "tds-cert.pem")
        key = key or os.path.join(data_dir, "tds-key.pem")
        if not (os.path.exists(cert) and os.path.exists(key)):
            generate_certificate(cert, key)
    if (cert is None) != (key is None):
        raise SystemExit("vdisim engine serve: --tds-cert and --tds-key go together")
    login = None
    if args.tds_login:
        user, sep, password = args.tds_login.partition(":")
        if not sep or not user:
            raise SystemExit("vdisim engine serve: --tds-login wants USER:PASSWORD")
        login = (user, password)
    return TdsConfig(args.tds, cert, key, login, args.tds_address_file)


__all__ = ["DEFAULT_ADDRESS", "add_serve_arguments", "config_from_args"]
