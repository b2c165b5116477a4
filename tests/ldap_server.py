"""A real OpenLDAP `slapd` (Debian's package) for the directory sign-in tests: started on free
ports (ldap:// with StartTLS, and ldaps://) over a throwaway database holding a test tree, and
stopped afterwards. The test tree:

    dc=example,dc=com
      ou=people: ann, bob (members of the chat group), dave (employeeType=disabled, a member),
                 eve (not a member), "dup" twice (two entries answer the same login)
      ou=groups: cn=chat (groupOfNames: ann, bob, dave)
      cn=reader: the account imchat searches with
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.harness import free_port, unavailable

SUFFIX = "dc=example,dc=com"
ROOT_DN, ROOT_PASSWORD = f"cn=admin,{SUFFIX}", "root-secret"
READER_DN, READER_PASSWORD = f"cn=reader,{SUFFIX}", "reader-secret"
PASSWORDS = {"ann": "ann-pass-1", "bob": "bob-pass-1", "dave": "dave-pass-1", "eve": "eve-pass-1"}
GROUP_DN = f"cn=chat,ou=groups,{SUFFIX}"

CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {folder}/slapd.pid
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
access to attrs=userPassword by anonymous auth by self read by * none
access to * by users read by * none
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_password}
directory {folder}/db
"""


def _person(uid: str, name: str, password: str, extra: str = "", ou: str = "people") -> str:
    return (f"dn: uid={uid},ou={ou},{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
            f"cn: {name}\nsn: {name.split()[-1]}\nuserPassword: {password}\n{extra}\n")


TREE = "\n".join([
    f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
    f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
    f"dn: ou=others,{SUFFIX}\nobjectClass: organizationalUnit\nou: others\n",
    f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
    f"dn: {READER_DN}\nobjectClass: simpleSecurityObject\nobjectClass: organizationalRole\n"
    f"cn: reader\nuserPassword: {READER_PASSWORD}\n",
    _person("ann", "Ann Lee", PASSWORDS["ann"]),
    _person("bob", "Bob Wu", PASSWORDS["bob"]),
    _person("dave", "Dave Old", PASSWORDS["dave"], "employeeType: disabled"),
    _person("eve", "Eve Out", PASSWORDS["eve"]),
    _person("dup", "Dup One", "dup-pass-1"),
    _person("dup", "Dup Two", "dup-pass-1", ou="others"),
    f"dn: {GROUP_DN}\nobjectClass: groupOfNames\ncn: chat\n"
    + "".join(f"member: uid={u},ou=people,{SUFFIX}\n" for u in ("ann", "bob", "dave")),
])


@dataclasses.dataclass
class Slapd:
    folder: Path
    port: int
    tls_port: int
    ca_file: Path

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def modify(self, ldif: str) -> None:
        """Change the tree as its administrator would (ldapmodify)."""
        subprocess.run(["ldapmodify", "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
                       input=ldif, text=True, check=True, capture_output=True, timeout=30)

    def settings(self, **overrides: object) -> dict[str, object]:
        """The [ldap] section for this server: plain ldap:// (tests of TLS override it)."""
        return {"enabled": True, "url": self.url, "start_tls": False, "bind_dn": READER_DN,
                "bind_password": READER_PASSWORD, "user_base": f"ou=people,{SUFFIX}",
                "user_filter": "(&(objectClass=inetOrgPerson)(uid={login}))",
                "disabled_filter": "(employeeType=disabled)", "required_group": GROUP_DN,
                "sync_interval_minutes": 0, **overrides}


def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _wait_for(port: int, process: subprocess.Popen[bytes], folder: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"slapd did not start: {(folder / 'slapd.log').read_text()}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_slapd(folder: Path) -> Iterator[Slapd]:
    slapd = shutil.which("slapd") or "/usr/sbin/slapd"
    if not Path(slapd).exists() or shutil.which("ldapadd") is None:
        unavailable("slapd and ldap-utils are not installed (apt-get install slapd ldap-utils)")
    (folder / "db").mkdir(parents=True)
    cert, key = make_certificate(folder, "server")
    (folder / "slapd.conf").write_text(CONFIG.format(
        folder=folder, cert=cert, key=key, suffix=SUFFIX, root_dn=ROOT_DN,
        root_password=ROOT_PASSWORD))
    port, tls_port = free_port(), free_port()
    with (folder / "slapd.log").open("wb") as log:
        # -d keeps slapd in the foreground (a child of this test, stopped below).
        process = subprocess.Popen(
            [slapd, "-f", str(folder / "slapd.conf"), "-d", "0",
             "-h", f"ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(port, process, folder)
        server = Slapd(folder, port, tls_port, cert)
        subprocess.run(["ldapadd", "-x", "-H", server.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
                       input=TREE, text=True, check=True, capture_output=True, timeout=30)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
