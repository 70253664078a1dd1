"""Keys the tests generate, and each provider's way of signing a webhook with them, written from
the providers' documentation (not from our code): SNS (RSA, X.509 certificate), SendGrid (ECDSA
P-256), Mailgun (HMAC-SHA256) and Postmark (HTTP basic auth)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

# What SNS signs for each message type, in this order, each as "Name\nvalue\n" (Subject only when
# the message has one): docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
SNS_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                                 "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                                "Type"),
}


class SnsSigner:
    """An RSA key and a self-signed certificate standing for SNS's, and the URL it is served at."""

    def __init__(self) -> None:
        self.cert_url = ("https://sns.us-east-1.amazonaws.com/"
                         "SimpleNotificationService-0123456789abcdef0123456789abcdef.pem")
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, message: dict[str, Any], *, version: str = "1", cert_url: str | None = None,
             key: rsa.RSAPrivateKey | None = None) -> dict[str, Any]:
        """`message` with SignatureVersion, Signature and SigningCertURL, as SNS sends it."""
        names = [name for name in SNS_SIGNED[message["Type"]] if name in message]
        text = "".join(f"{name}\n{message[name]}\n" for name in names)
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.key).sign(text.encode(), padding.PKCS1v15(), digest)
        return {**message, "SignatureVersion": version, "Signature": base64.b64encode(signature).decode(),
                "SigningCertURL": cert_url or self.cert_url}


class SendgridSigner:
    """An ECDSA P-256 key pair; `public_key` is the base64 DER SendGrid shows in its settings."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_key = base64.b64encode(der).decode()
        self.public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def headers(self, body: bytes, timestamp: int) -> dict[str, str]:
        """The signature headers SendGrid sends with `body`: ECDSA over timestamp + body."""
        signature = self.key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
                "Content-Type": "application/json"}


def mailgun_signature(signing_key: str, timestamp: int, token: str | None = None) -> dict[str, str]:
    """Mailgun's `signature` block: hex HMAC-SHA256 of timestamp + token with the signing key."""
    token = token or secrets.token_hex(25)            # Mailgun's tokens are 50 characters
    digest = hmac.new(signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"timestamp": str(timestamp), "token": token, "signature": digest}


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The Authorization header a client makes from `https://user:password@host/...`."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
