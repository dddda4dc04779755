"""``salt_django_acme.certificate``: asks certbot only when its lineage does not
match, predicts that in test mode, and reports certbot's reason when it fails."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.unit.conftest import load

acme = load("_states/salt_django_acme.py")
DIRECTORY = "https://acme.example.org/directory"


def _pem(names: list[str]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def lineage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(acme, "LETSENCRYPT", str(tmp_path / "le"))
    monkeypatch.setattr(acme, "CERTBOT", "/bin/true")
    return tmp_path


def _hold(root: Path, names: list[str], server: str = DIRECTORY) -> str:
    (root / "le" / "renewal").mkdir(parents=True, exist_ok=True)
    (root / "le" / "live" / "demo").mkdir(parents=True, exist_ok=True)
    (root / "le" / "renewal" / "demo.conf").write_text(f"version = 2.1.0\n[renewalparams]\nserver = {server}\n")
    pem = _pem(names)
    (root / "le" / "live" / "demo" / "cert.pem").write_text(pem)
    (root / "le" / "live" / "demo" / "fullchain.pem").write_text(pem)
    return pem


def _apply(root: Path, calls: list[list[str]], retcode: int = 0, test: bool = False, output: str = "") -> dict[str, Any]:
    def run_all(argv: list[str], **_: object) -> dict[str, Any]:
        calls.append(argv)
        return {"retcode": retcode, "stdout": output, "stderr": ""}

    acme.__salt__ = {"cmd.run_all": run_all, "pillar.get": lambda key: "secret-hmac"}
    acme.__opts__ = {"test": test}
    served = root / "served.crt"
    return acme.certificate(
        "demo", ["demo.example.org"], DIRECTORY, "/usr/local/lib/salt-django/acme-deployed", str(served), webroot="/var/www"
    )


def test_a_matching_lineage_that_is_served_changes_nothing(lineage: Path) -> None:
    (lineage / "served.crt").write_text(_hold(lineage, ["demo.example.org"]))
    calls: list[list[str]] = []
    assert _apply(lineage, calls)["changes"] == {} and calls == []


def test_another_ca_or_other_domains_ask_certbot_and_test_mode_only_says_so(lineage: Path) -> None:
    _hold(lineage, ["demo.example.org", "old.example.org"])
    calls: list[list[str]] = []
    predicted = _apply(lineage, calls, test=True)
    assert predicted["result"] is None and "certificate" in predicted["changes"] and calls == []
    _apply(lineage, calls)
    [argv] = calls
    assert argv[argv.index("--server") + 1] == DIRECTORY and argv[argv.index("-d") + 1] == "demo.example.org"
    assert "--webroot" in argv and "secret-hmac" not in " ".join(argv)


def test_a_refusal_names_certbots_reason_and_keeps_the_served_certificate(lineage: Path) -> None:
    _hold(lineage, ["demo.example.org"], server="https://old-ca.example.org/directory")
    calls: list[list[str]] = []
    refused = _apply(lineage, calls, retcode=1, output="An unexpected error occurred:\nConnection refused")
    assert refused["result"] is False and "Connection refused" in refused["comment"] and "served certificate stays" in refused["comment"]


def test_a_certificate_certbot_holds_but_the_server_lacks_is_deployed_by_the_hook(lineage: Path) -> None:
    _hold(lineage, ["demo.example.org"])
    calls: list[list[str]] = []
    deployed = _apply(lineage, calls)
    assert deployed["result"] is True and "served" in deployed["changes"]
    assert calls == [["/usr/local/lib/salt-django/acme-deployed", "demo"]]
