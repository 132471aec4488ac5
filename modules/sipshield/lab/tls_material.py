"""A private CA with a server and a client certificate, for the lab.

Tests that need more (a second CA, a certificate with the wrong name) use
:func:`make_ca` and :func:`issue_certificate`.

Made with the ``openssl`` command (Debian's openssl package), so the lab needs
no extra Python dependency.  Production deployments bring their own
certificates (see docs/policy.md, *Encrypted signalling*).
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabCertificates:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _san(names: list[str]) -> str:
    entries = []
    for name in names:
        if name.startswith(("DNS:", "IP:", "URI:")):
            entries.append(name)
            continue
        try:
            ipaddress.ip_address(name)
            entries.append(f"IP:{name}")
        except ValueError:
            entries.append(f"DNS:{name}")
    return "subjectAltName=" + ",".join(entries)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _issue(directory: Path, name: str, cn: str, sans: list[str], ca: tuple[Path, Path]) -> None:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    _openssl(
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={cn}",
    )
    extensions = directory / f"{name}.ext"
    extensions.write_text(_san(sans) + "\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        str(extensions),
        "-out",
        str(cert),
    )
    csr.unlink()
    extensions.unlink()
    key.chmod(0o600)


def make_ca(directory: Path, name: str = "ca", cn: str = "sipshield lab CA") -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key) as ``directory/NAME.crt`` and ``.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_cert),
        "-days",
        "30",
        "-subj",
        f"/CN={cn}",
    )
    ca_key.chmod(0o600)
    return ca_cert, ca_key


def issue_certificate(
    directory: Path, name: str, cn: str, sans: list[str], ca: tuple[Path, Path]
) -> tuple[Path, Path]:
    """A certificate signed by ``ca`` (certificate, key): (``NAME.crt``, ``NAME.key``)."""
    directory.mkdir(parents=True, exist_ok=True)
    _issue(directory, name, cn, sans, ca)
    return directory / f"{name}.crt", directory / f"{name}.key"


def make_lab_certificates(directory: Path, server_names: list[str]) -> LabCertificates:
    ca = make_ca(directory)
    ca_cert = ca[0]
    # Each address is a name too: mbedTLS, under linphone's belle-sip, matches
    # the host a phone connected to against names only, never IP entries.
    addresses = [f"DNS:{n}" for n in server_names if _is_address(n)]
    _issue(directory, "server", server_names[0], server_names + addresses, ca)
    _issue(directory, "client", "lab-client", ["lab-client.sipshield.lab"], ca)
    return LabCertificates(
        ca_cert=ca_cert,
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
