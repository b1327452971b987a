"""An HTTPS proxy on 127.0.0.1 that answers for a few public hosts (api.openai.com, router.huggingface.co)
with a throwaway CA, and passes the decrypted requests on to a local server.

Why: code that names a public endpoint itself (``OpenAIServerModel(api_base="https://api.openai.com/v1")``
in smolagents' docs, ``HfApiModel()`` calling Hugging Face's router, ``huggingface_hub.login``) can then
run unchanged against a local server, redirected through the environment only, the way a corporate proxy
does it: ``HTTPS_PROXY`` names this proxy and ``SSL_CERT_FILE`` its CA (httpx and httpx2 read both).
``CONNECT`` to any host not in the list is refused (403), so nothing leaves the machine.

Each decrypted request goes to ``upstream`` (e.g. a :class:`~tests.servers.recording.RecordingServer`)
with its method, path, headers (``Host`` included: the recorder sees which public host was asked) and
body; the reply comes back as is. ``GET /api/whoami-v2`` (what ``huggingface_hub.login`` checks a token
with) is answered here with :data:`WHOAMI`.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import ssl
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from socketserver import StreamRequestHandler, ThreadingTCPServer
from typing import Any
from urllib.parse import urlparse

from modelfactory.testing import STOP_POLL_S

WHOAMI = {
    "type": "user",
    "name": "doc-reader",
    "auth": {"type": "access_token", "accessToken": {"displayName": "doc-test", "role": "read"}},
}


def make_certificates(hosts: Iterable[str], folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``hosts`` signed by it: ``(ca.pem, server.pem, server.key)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=2))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelfactory test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    hosts = list(hosts)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, cert_file, key_file


class TLSInterceptor:
    def __init__(self, upstream: str, hosts: Iterable[str], folder: Path) -> None:
        self.upstream = urlparse(upstream)
        self.hosts = frozenset(hosts)
        self.refused: list[str] = []  # CONNECT targets turned away
        self.whoami: list[str | None] = []  # the Authorization of each token check (huggingface_hub.login)
        self.ca_file, cert_file, key_file = make_certificates(sorted(self.hosts), folder)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert_file, key_file)
        self._server = ThreadingTCPServer(("127.0.0.1", 0), self._connect_handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": STOP_POLL_S}
        )
        self._thread.daemon = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """What a process needs in its environment to go through this proxy (and nothing else)."""
        return {
            "HTTPS_PROXY": self.url,
            "https_proxy": self.url,
            "SSL_CERT_FILE": str(self.ca_file),
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def __enter__(self) -> TLSInterceptor:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -------------------------------------------------------------- the proxy
    def _connect_handler(self) -> type[StreamRequestHandler]:
        proxy = self

        class Connect(StreamRequestHandler):
            def handle(self) -> None:
                request = self.rfile.readline(65536).decode("latin-1").split()
                while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass  # the CONNECT request's headers
                if len(request) < 2 or request[0].upper() != "CONNECT":
                    self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                    return
                host = request[1].rsplit(":", 1)[0]
                if host not in proxy.hosts:
                    proxy.refused.append(host)
                    self.wfile.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                    return
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.wfile.flush()
                try:
                    tls = proxy._tls.wrap_socket(self.connection, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                with contextlib.closing(tls):
                    proxy._inner_handler()(tls, self.client_address, proxy._server)

        return Connect

    def _inner_handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Inner(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "GET" and self.path.startswith("/api/whoami"):
                    proxy.whoami.append(self.headers.get("authorization"))
                    payload = json.dumps(WHOAMI).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                up = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                up.request(self.command, self.path, body=body, headers=headers)
                reply = up.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                up.close()

            do_GET = do_POST = _relay

        return Inner
