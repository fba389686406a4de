"""Make a private CA, a server certificate and (optionally) client certificates for the bridge.

For tests and small deployments; in production use your organisation's CA::

    python3 -m facerec_server.bridge.certs --out-dir ~/.facerec/bridge \\
        --host robot-ws.local --host 192.168.1.20 --client camera1

writes ``ca.pem`` / ``ca.key`` (self-signed CA), ``server.pem`` / ``server.key`` (for the
bridge's ``certfile`` / ``keyfile``) and ``client-camera1.pem`` / ``.key`` (for mTLS: bridge
``auth: mtls`` with ``ca_file: ca.pem``; camera ``--certfile/--keyfile``). Clients verify
the server with ``--cafile ca.pem``. Keys are written with mode 0600. Needs ``cryptography``.
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from typing import Iterable, List, Optional, Tuple


def _imports():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:  # pragma: no cover
        sys.exit("facerec_server.bridge.certs needs 'cryptography' (pip install cryptography)")
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _write(path: str, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


class _Issuer:
    def __init__(self, days: int):
        (self.x509, self.hashes, self.serialization, self.ec, self.eku,
         self.oid) = _imports()
        self.days = days
        self.ca_key = self.ec.generate_private_key(self.ec.SECP256R1())
        name = self.x509.Name([self.x509.NameAttribute(self.oid.COMMON_NAME,
                                                       "facerec bridge test CA")])
        self.ca_name = name
        self.ca_cert = self._builder(name, self.ca_key.public_key()).add_extension(
            self.x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            self.x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True).add_extension(
            self.x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()),
            critical=False).sign(self.ca_key, self.hashes.SHA256())

    def _builder(self, subject, public_key):
        now = datetime.datetime.now(datetime.timezone.utc)
        return (self.x509.CertificateBuilder().subject_name(subject)
                .issuer_name(getattr(self, "ca_name", subject)).public_key(public_key)
                .serial_number(self.x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=self.days)))

    def leaf(self, common_name: str, hosts: Iterable[str] = (), server: bool = True):
        key = self.ec.generate_private_key(self.ec.SECP256R1())
        subject = self.x509.Name([self.x509.NameAttribute(self.oid.COMMON_NAME, common_name)])
        builder = self._builder(subject, key.public_key()).add_extension(
            self.x509.BasicConstraints(ca=False, path_length=None), critical=True).add_extension(
            self.x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True).add_extension(
            self.x509.ExtendedKeyUsage([self.eku.SERVER_AUTH if server
                                        else self.eku.CLIENT_AUTH]), critical=False).add_extension(
            self.x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
            critical=False)
        names = []
        for host in hosts:
            try:
                names.append(self.x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(self.x509.DNSName(host))
        if names:
            builder = builder.add_extension(self.x509.SubjectAlternativeName(names),
                                            critical=False)
        return key, builder.sign(self.ca_key, self.hashes.SHA256())

    def pem(self, key=None, cert=None) -> bytes:
        if key is not None:
            return key.private_bytes(self.serialization.Encoding.PEM,
                                     self.serialization.PrivateFormat.PKCS8,
                                     self.serialization.NoEncryption())
        return cert.public_bytes(self.serialization.Encoding.PEM)


def make_certs(out_dir: str, hosts: List[str], clients: Optional[List[str]] = None,
               days: int = 365) -> dict:
    """Write the CA, server and client pairs into ``out_dir``; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    issuer = _Issuer(days)
    paths = {"ca": os.path.join(out_dir, "ca.pem"), "ca_key": os.path.join(out_dir, "ca.key")}
    _write(paths["ca"], issuer.pem(cert=issuer.ca_cert), False)
    _write(paths["ca_key"], issuer.pem(key=issuer.ca_key), True)
    pairs: List[Tuple[str, str, List[str], bool]] = [("server", hosts[0], hosts, True)]
    pairs += [(f"client-{c}", c, [], False) for c in clients or ()]
    for stem, common_name, names, server in pairs:
        key, cert = issuer.leaf(common_name, names, server)
        paths[stem] = os.path.join(out_dir, stem + ".pem")
        paths[stem + "_key"] = os.path.join(out_dir, stem + ".key")
        _write(paths[stem], issuer.pem(cert=cert), False)
        _write(paths[stem + "_key"], issuer.pem(key=key), True)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", required=True, help="directory to write the PEM files to")
    parser.add_argument("--host", action="append", default=[],
                        help="server DNS name or IP the clients connect to (repeatable; "
                             "default localhost and 127.0.0.1)")
    parser.add_argument("--client", action="append", default=[],
                        help="also issue a client certificate with this common name (mTLS)")
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error(f"--days must be at least 1, got {args.days}")
    if os.path.lexists(args.out_dir) and not os.path.isdir(args.out_dir):
        parser.error(f"--out-dir {args.out_dir} is not a directory: name a directory "
                     "(it is made if missing)")
    try:
        paths = make_certs(args.out_dir, args.host or ["localhost", "127.0.0.1"], args.client,
                           args.days)
    except (OSError, ValueError) as error:
        print(f"facerec-bridge-certs: cannot write the certificates to {args.out_dir}: "
              f"{error}", file=sys.stderr)
        return 1
    for label, path in paths.items():
        print(f"{label:>20}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
