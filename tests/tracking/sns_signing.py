"""Signing SNS messages in tests, as Amazon SNS does, with a key of our own.

The signer makes an RSA key and a certificate for it and serves the certificate over http on
loopback, like SNS at its SigningCertURL; its requests are counted. The string to sign is built
here from AWS's documentation, independently of tracking.sns. The `sns` fixture
(tests/tracking/conftest.py) lets tracking.sns fetch from it.
"""

from __future__ import annotations

import base64
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


def certificate_pem(
    key: rsa.RSAPrivateKey, *, valid_from: datetime, valid_until: datetime
) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


class SnsSigner:
    def __init__(self, *, expired: bool = False) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.now(UTC)
        if expired:
            self.pem = certificate_pem(
                self.key, valid_from=now - timedelta(days=30), valid_until=now - timedelta(days=1)
            )
        else:
            self.pem = certificate_pem(
                self.key, valid_from=now - timedelta(days=1), valid_until=now + timedelta(days=1)
            )
        self.requests = 0
        signer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                signer.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-pem-file")
                self.end_headers()
                self.wfile.write(signer.pem)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{port}/SimpleNotificationService-{uuid.uuid4().hex}.pem"

    def sign(
        self, message: dict[str, Any], *, version: str = "1", url: str | None = None
    ) -> dict[str, Any]:
        """`message` with SignatureVersion, SigningCertURL and a valid Signature."""
        signed = {**message, "SignatureVersion": version, "SigningCertURL": url or self.url}
        fields = NOTIFICATION_FIELDS if signed["Type"] == "Notification" else CONFIRMATION_FIELDS
        canonical = "".join(
            f"{name}\n{signed[name]}\n" for name in fields if signed.get(name) is not None
        ).encode()
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 (SNS v1)
        signature = self.key.sign(canonical, padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
