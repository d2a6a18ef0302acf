"""A real OpenLDAP server for the directory sign-in tests: Debian's ``slapd`` started on free
loopback ports (ldap:// with StartTLS, and ldaps://) with a generated slapd.conf, an mdb database
in a temporary folder, the schemas of /etc/ldap/schema, the memberof overlay, a generated CA and
server certificate, and a generated directory (loaded with ``ldapadd``).

No slapd (or ldapadd) skips with the reason, and fails under LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SLAPD = "/usr/sbin/slapd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "root-secret-for-tests"
SERVICE_DN = f"cn=liaison,ou=services,{SUFFIX}"
SERVICE_PW = "service-secret-for-tests"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
PASSWORD = "directory password 1"
# Seconds slapd has to start listening, and each ldap tool to finish.
START_S = 20.0
TOOL_S = 20.0

# name -> groups (cn under ou=groups). "grey" is mapped to nothing.
USERS: dict[str, tuple[str, ...]] = {
    "alice": ("blue", "analysts"),
    "bob": ("red",),
    "carol": ("grey",),
    "dave": ("blue",),
    "erin": ("blue",),
    "frank": ("blue",),
    "gina": ("red",),
    "henry": ("blue",),
}
GROUP_NAMES = ("blue", "red", "grey", "analysts")


def user_dn(name: str) -> str:
    return f"uid={name},{PEOPLE}"


def group_dn(name: str) -> str:
    return f"cn={name},{GROUPS}"


def disable_ldif(name: str) -> str:
    """Disable ``name`` the way the tests' ``disabled_filter`` (employeeType=disabled) sees."""
    return f"dn: {user_dn(name)}\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n"


def enable_ldif(name: str) -> str:
    return f"dn: {user_dn(name)}\nchangetype: modify\ndelete: employeeType\n"


def require_or_skip(reason: str) -> None:
    if os.environ.get("LIAISON_REQUIRE_SERVICES") == "1":
        pytest.fail(f"OpenLDAP tests required but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_ca(directory: Path, cn: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{cn.replace(' ', '-')}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def make_server_cert(
    directory: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def directory_ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: Example\ndc: example\n",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: liaison\nuserPassword: {SERVICE_PW}\n",
    ]
    for name in USERS:
        entries.append(
            f"dn: {user_dn(name)}\nobjectClass: inetOrgPerson\nuid: {name}\ncn: {name}\n"
            f"sn: {name}\nuserPassword: {PASSWORD}\n"
        )
    for group in GROUP_NAMES:
        members = [n for n, gs in USERS.items() if group in gs]
        lines = "".join(f"member: {user_dn(m)}\n" for m in members)
        entries.append(f"dn: {group_dn(group)}\nobjectClass: groupOfNames\ncn: {group}\n{lines}")
    return "\n".join(entries)


@dataclass(frozen=True)
class Slapd:
    ldap_url: str  # ldap:// (StartTLS)
    ldaps_url: str
    ca_file: Path
    wrong_ca_file: Path  # a CA that did not sign the server's certificate
    workdir: Path

    def modify(self, ldif: str) -> None:
        """Apply an LDIF change as the directory's root (ldapmodify over the loopback)."""
        subprocess.run(
            ["ldapmodify", "-x", "-H", self.ldap_url, "-D", ROOT_DN, "-w", ROOT_PW],
            input=ldif.encode(),
            check=True,
            capture_output=True,
            timeout=TOOL_S,
        )


def _slapd_conf(
    work: Path, cert: Path, key: Path, ca: Path, schemas: tuple[str, ...], memberof: bool
) -> str:
    includes = "".join(f"include {SCHEMA_DIR / s}.schema\n" for s in schemas)
    return (
        includes
        + f"modulepath {MODULE_DIR}\nmoduleload back_mdb\n"
        + ("moduleload memberof\n" if memberof else "")
        + f"pidfile {work / 'slapd.pid'}\nargsfile {work / 'slapd.args'}\n"
        f"TLSCACertificateFile {ca}\nTLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n"
        f'database mdb\nmaxsize 10485760\nsuffix "{SUFFIX}"\nrootdn "{ROOT_DN}"\n'
        f"rootpw {ROOT_PW}\ndirectory {work / 'db'}\n"
        + ("overlay memberof\n" if memberof else "")
        + "access to attrs=userPassword by self write by anonymous auth by * none\n"
        "access to * by users read by * none\n"
    )


@contextlib.contextmanager
def _run_slapd(
    work: Path, *, schemas: tuple[str, ...], memberof: bool, ldif: str
) -> Iterator[Slapd]:
    """slapd with the given schemas and directory, on two free loopback ports, for the block."""
    if not os.access(SLAPD, os.X_OK) or shutil.which("ldapadd") is None:
        require_or_skip(f"{SLAPD} or ldapadd is not installed (Debian: slapd ldap-utils)")
    missing = [s for s in schemas if not (SCHEMA_DIR / f"{s}.schema").exists()]
    if not (MODULE_DIR / "back_mdb.so").exists() or missing:
        require_or_skip(f"slapd modules ({MODULE_DIR}) or schemas {missing} missing")
    (work / "db").mkdir()
    ca_path, ca, ca_key = make_ca(work, "Test LDAP CA")
    wrong_ca, _, _ = make_ca(work, "Some Other CA")
    cert, key = make_server_cert(work, ca, ca_key)
    conf = work / "slapd.conf"
    conf.write_text(_slapd_conf(work, cert, key, ca_path, schemas, memberof))
    ldap_port, ldaps_port = _free_port(), _free_port()
    ldap_url = f"ldap://127.0.0.1:{ldap_port}"
    ldaps_url = f"ldaps://127.0.0.1:{ldaps_port}"
    log = (work / "slapd.log").open("wb")
    # -d 0: stay in the foreground (the fixture owns the process) and log nothing extra.
    proc = subprocess.Popen(
        [SLAPD, "-f", str(conf), "-h", f"{ldap_url}/ {ldaps_url}/", "-d", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_S
        while True:  # bounded by START_S
            if proc.poll() is not None:
                log.flush()
                pytest.fail(f"slapd exited: {(work / 'slapd.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", ldap_port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"slapd did not listen within {START_S} s")
                time.sleep(0.1)
        subprocess.run(
            ["ldapadd", "-x", "-H", ldap_url, "-D", ROOT_DN, "-w", ROOT_PW],
            input=ldif.encode(),
            check=True,
            capture_output=True,
            timeout=TOOL_S,
        )
        yield Slapd(
            ldap_url=ldap_url,
            ldaps_url=ldaps_url,
            ca_file=ca_path,
            wrong_ca_file=wrong_ca,
            workdir=work,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """OpenLDAP as usually deployed: inetOrgPerson users, groupOfNames groups, memberof."""
    with _run_slapd(
        tmp_path_factory.mktemp("slapd"),
        schemas=("core", "cosine", "nis", "inetorgperson"),
        memberof=True,
        ldif=directory_ldif(),
    ) as server:
        yield server


# Active Directory's shape, in slapd: Debian's msuser.schema (the AD user class and attributes),
# users found by sAMAccountName, memberOf values on the user entries (as AD computes them), and
# userAccountControl, tested with the bitwise rule 1.2.840.113556.1.4.803, which slapd implements
# too (integerBitAndMatch). 512 is NORMAL_ACCOUNT, 514 NORMAL_ACCOUNT | ACCOUNTDISABLE.
AD_USERS: dict[str, int] = {"lee": 512, "kim": 514, "max": 512}


def ad_user_dn(name: str) -> str:
    return f"cn={name.title()},{PEOPLE}"


def ad_group_dn(name: str) -> str:
    return f"CN=TAK {name.title()},OU=Groups,{SUFFIX.upper()}"


def ad_directory_ldif() -> str:
    entries = directory_ldif().split("\n\n")[:5]  # the suffix, the OUs, the service account
    for name, flags in AD_USERS.items():
        entries.append(
            f"dn: {ad_user_dn(name)}\nobjectClass: user\nobjectClass: extensibleObject\n"
            "instanceType: 4\nnTSecurityDescriptor:: AAAA\n"
            f"objectCategory: CN=Person,CN=Schema,CN=Configuration,{SUFFIX}\n"
            f"cn: {name.title()}\nsn: {name}\nsAMAccountName: {name}\n"
            f"userAccountControl: {flags}\nmemberOf: {ad_group_dn('blue')}\n"
            f"userPassword: {PASSWORD}\n"
        )
    return "\n\n".join(entries) + "\n"


def set_ad_flags(server: Slapd, name: str, flags: int) -> None:
    server.modify(
        f"dn: {ad_user_dn(name)}\nchangetype: modify\nreplace: userAccountControl\n"
        f"userAccountControl: {flags}\n"
    )


@pytest.fixture(scope="module")
def ad_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with _run_slapd(
        tmp_path_factory.mktemp("ad-slapd"),
        schemas=("core", "cosine", "nis", "inetorgperson", "msuser"),
        memberof=False,
        ldif=ad_directory_ldif(),
    ) as server:
        yield server


def directory_toml(
    server: Slapd,
    *,
    url: str | None = None,
    start_tls: bool = False,
    ca_file: Path | None = None,
    refresh_s: float = 60,
    extra: str = "",
) -> str:
    """A ``[directory]`` section for ``server`` (the service password from a file beside it)."""
    pw_file = server.workdir / "service-password"
    pw_file.write_text(SERVICE_PW + "\n")
    pw_file.chmod(0o600)
    return (
        "[directory]\n"
        f'urls = ["{url or server.ldaps_url}"]\n'
        f"start_tls = {'true' if start_tls else 'false'}\n"
        f'ca_file = "{ca_file or server.ca_file}"\n'
        f'bind_dn = "{SERVICE_DN}"\n'
        f'bind_password_file = "{pw_file}"\n'
        f'user_base = "{PEOPLE}"\n'
        'disabled_filter = "(employeeType=disabled)"\n'
        'org = "Example"\n'
        f"refresh_s = {refresh_s}\n"
        "timeout_s = 5\n"
        f"{extra}"
        "[[directory.map]]\n"
        f'group = "{group_dn("blue")}"\n'
        'groups = ["Blue"]\n'
        'org = "NATO"\n'
        "[[directory.map]]\n"
        f'group = "{group_dn("analysts").upper()}"\n'  # DNs compare case-insensitively
        'in = ["Analysts"]\n'
        'profile = "secret-analyst"\n'
        "[[directory.map]]\n"
        f'group = "{group_dn("red")}"\n'
        'in = ["Red"]\n'
        'out = ["Red", "HQ"]\n'
    )
