"""The lab's keys and certificates: the controller's ssh key, each host's ssh host key in the
controller's known_hosts, and a CA made for each lab run with one server certificate per host
for the agents' TLS. Private keys are 0600 in 0700 directories."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .common import make_private_dir, run, write_private
from .network import host_address, host_name


def ssh_key(path: Path) -> None:
    """The controller's ssh key at `path` (and `path`.pub), made once and kept across runs."""
    ssh_dir = make_private_dir(path.parent)
    if not path.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tb-lab-controller",
             "-f", str(path)])
    os.chmod(path, 0o600)
    assert ssh_dir.stat().st_mode & 0o077 == 0


def host_ssh_key(etc: Path, name: str) -> None:
    """A host's own ssh host key, in its copy of the root filesystem (`etc`)."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
         "-f", str(etc / "ssh" / "ssh_host_ed25519_key")])


def known_hosts(path: Path, hosts: Iterable[tuple[str, str, Path]]) -> None:
    """`path` lists each host's (address, name, root) ssh host key: ssh checks them strictly."""
    lines = []
    for address, name, root in hosts:
        public = Path(root, "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"{address},{name} {public[0]} {public[1]}\n")
    write_private(path, "".join(lines))


def certificates(pki_dir: Path, ca_cert: Path, count: int) -> None:
    """A CA made for this lab run (`ca_cert`, its key beside it) and one server certificate per
    host (SAN: the host's address and name) in `pki_dir`."""
    pki = make_private_dir(pki_dir)
    ca_key = pki / "ca.key"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "30",
         "-subj", "/CN=tb-lab CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    os.chmod(ca_key, 0o600)
    for index in range(count):
        name, address = host_name(index), host_address(index)
        key, csr, cert = (pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.crt")
        extensions = pki / f"{name}.ext"
        extensions.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            f"subjectAltName=IP:{address},DNS:{name}\n")
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={name}"])
        os.chmod(key, 0o600)
        run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert),
             "-CAkey", str(ca_key), "-CAcreateserial", "-days", "30", "-out", str(cert),
             "-extfile", str(extensions)])
        csr.unlink()
        extensions.unlink()
