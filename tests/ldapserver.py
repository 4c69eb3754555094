"""A throwaway OpenLDAP slapd for the LDAP identity tests: StartTLS, people, groups, memberOf.

`running_slapd(workdir)` writes a slapd.conf (mdb backend, the memberof
overlay, a trustme certificate for 127.0.0.1), starts /usr/sbin/slapd on a
free loopback port and loads PEOPLE/GROUPS through StartTLS as the root DN,
so the overlay fills in `memberOf`. `stop()`/`start()` take the same server
down and up again (the "directory down" tests). Debian: packages `slapd`
and `ldap-utils` (.ci/run installs them).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trustme
from ldap3 import Connection, Server, Tls

SLAPD = "/usr/sbin/slapd"
BASE = "dc=example,dc=org"
ROOT_DN, ROOT_PW = f"cn=admin,{BASE}", "root-secret-Zq7"
READER_DN, READER_PW = f"cn=reader,{BASE}", "reader-secret-Xy3"
PEOPLE = f"ou=people,{BASE}"
GROUPS = f"ou=groups,{BASE}"

# uid: (password, departmentNumber or None, groups); "twin" is there twice.
USERS = {
    "alice": ("alice-pw-1", "north", ["analysts"]),
    "bob": ("bob-pw-1", "south", ["analysts", "auditors"]),
    "carol": ("carol-pw-1", None, ["supervisors"]),
}


class Slapd:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = _free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = str(workdir / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        cert.private_key_pem.write_to_path(str(workdir / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(workdir / "cert.pem"))
        (workdir / "db").mkdir()
        (workdir / "slapd.conf").write_text(
            f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {workdir}/slapd.pid
TLSCACertificateFile {self.ca_file}
TLSCertificateFile {workdir}/cert.pem
TLSCertificateKeyFile {workdir}/key.pem
# Nothing but the TLS handshake itself in clear: binds and searches need StartTLS.
security tls=1
database mdb
suffix "{BASE}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {workdir}/db
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact="{READER_DN}" read by self read by anonymous auth
overlay memberof
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", str(self.dir / "slapd.conf"), "-h", f"{self.url}/"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "slapd.log", "ab"),  # noqa: SIM115 - the child keeps it
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"slapd did not start: {self.dir}/slapd.log") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def admin(self) -> Connection:
        tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=self.ca_file)
        conn = Connection(Server(self.url, tls=tls), ROOT_DN, ROOT_PW)
        conn.open()
        assert conn.start_tls() and conn.bind(), conn.result
        return conn

    def load(self) -> None:
        c = self.admin()
        _add(c, BASE, ["dcObject", "organization"], {"dc": "example", "o": "Example"})
        _add(c, READER_DN, ["simpleSecurityObject", "organizationalRole"], {
            "cn": "reader", "userPassword": READER_PW,
        })  # fmt: skip
        for ou in ("people", "groups", "contractors"):
            _add(c, f"ou={ou},{BASE}", ["organizationalUnit"], {"ou": ou})
        members: dict[str, list[str]] = {}
        for uid, (pw, dept, groups) in USERS.items():
            attrs = {"cn": uid, "sn": uid, "uid": uid, "userPassword": pw}
            if dept:
                attrs["departmentNumber"] = dept
            _add(c, f"uid={uid},{PEOPLE}", ["inetOrgPerson"], attrs)
            for g in groups:
                members.setdefault(g, []).append(f"uid={uid},{PEOPLE}")
        for where in (PEOPLE, f"ou=contractors,{BASE}"):  # one name, two entries
            _add(c, f"uid=twin,{where}", ["inetOrgPerson"], {
                "cn": "twin", "sn": "twin", "uid": "twin", "userPassword": "twin-pw-1",
            })  # fmt: skip
        _add(c, f"uid=multi,{PEOPLE}", ["inetOrgPerson"], {
            "cn": "multi", "sn": "multi", "uid": "multi", "departmentNumber": ["north", "south"],
        })  # fmt: skip
        for g, dns in members.items():
            _add(c, f"cn={g},{GROUPS}", ["groupOfNames"], {"cn": g, "member": dns})
        c.unbind()


def _add(c: Connection, dn: str, classes: list[str], attrs: dict[str, object]) -> None:
    assert c.add(dn, classes, attrs), (dn, c.result)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_slapd(workdir: Path) -> Iterator[Slapd]:
    if not Path(SLAPD).exists() or shutil.which("slaptest") is None:
        raise RuntimeError("slapd is not installed (Debian: apt-get install slapd ldap-utils)")
    server = Slapd(workdir)
    server.start()
    try:
        server.load()
        yield server
    finally:
        server.stop()


@contextmanager
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung directory)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])
