"""A real IMAP server for the bounce-mailbox tests: Debian's Dovecot, with a throwaway config.

Each server has its own folder (config, passwd-file, Maildir storage, TLS certificate made by
trustme, log) and listens on loopback only: plain IMAP (which also offers STARTTLS) and IMAPS,
each on a free port. Dovecot is installed by `.ci/install-dovecot` when missing, as the
browser tests install Chromium.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import trustme

ROOT = Path(__file__).resolve().parent.parent
DOVECOT = os.environ.get("DOVECOT", "/usr/sbin/dovecot")
USER = "bounces"
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    """A Dovecot process serving one mailbox user (`USER`/`PASSWORD`) on loopback."""

    def __init__(self) -> None:
        if not Path(DOVECOT).exists():
            subprocess.run([str(ROOT / ".ci" / "install-dovecot")], check=True)
        # Not under pytest's tmp_path: that is private to the test's user, and Dovecot's mail
        # processes run as another (`nobody` when the tests run as root).
        self.dir = Path(tempfile.mkdtemp(prefix="pipeline-dovecot-"))
        self.dir.chmod(0o755)
        self.port = free_port()
        self.tls_port = free_port()
        self.ca = trustme.CA()
        self.ca_file = self.dir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(self.dir / "server.key"))
        (self.dir / "server.pem").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
        self.maildir = self.dir / "home" / USER / "Maildir"
        self._process: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        root = os.geteuid() == 0
        account = pwd.getpwnam("nobody") if root else pwd.getpwuid(os.geteuid())
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        os.chown(home, account.pw_uid, account.pw_gid)
        (self.dir / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n", encoding="utf-8")
        # As root Dovecot runs its login and internal processes as the users its package made;
        # as anyone else, everything runs as that user.
        own = "" if root else (f"default_login_user = {account.pw_name}\n"
                               f"default_internal_user = {account.pw_name}\n")
        return f"""\
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
{own}protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{self.dir}/server.pem
ssl_key = <{self.dir}/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login
# No pause after a failed login (2 s by default): the wrong-password tests need none.
auth_failure_delay = 0
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.dir}/users
}}
userdb {{
  driver = static
  args = uid={account.pw_uid} gid={account.pw_gid} home={home}/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""

    def start(self) -> Dovecot:
        conf = self.dir / "dovecot.conf"
        conf.write_text(self._config(), encoding="utf-8")
        self._process = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                problem = f"dovecot exited: {self._process.stderr.read().decode()}{self.log()}"  # type: ignore[union-attr]
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return self
            except OSError:
                time.sleep(0.05)
        else:
            problem = f"dovecot did not answer on 127.0.0.1:{self.port}: {self.log()}"
        self.stop()
        raise RuntimeError(problem)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    # -- the test's own IMAP client: delivering and looking ------------------------------------

    def _client(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def deliver(self, *messages: bytes, folder: str = "INBOX") -> None:
        """Put messages into the mailbox, unread (IMAP APPEND, as a mail server's LDA would)."""
        client = self._client()
        try:
            if folder != "INBOX":
                client.create(f'"{folder}"')
            for raw in messages:
                typ, data = client.append(f'"{folder}"', "", None, raw.replace(b"\r\n", b"\n")
                                          .replace(b"\n", b"\r\n"))
                assert typ == "OK", data
        finally:
            client.logout()

    def flags(self, folder: str = "INBOX") -> list[set[str]]:
        """Each message's flags, in mailbox order."""
        client = self._client()
        try:
            typ, data = client.select(f'"{folder}"', readonly=True)
            if typ != "OK" or data[0] == b"0":
                return []
            typ, data = client.fetch("1:*", "(FLAGS)")
            return [set(re.search(rb"FLAGS \(([^)]*)\)", d)[1].decode().split())  # type: ignore[index]
                    for d in data if isinstance(d, bytes)]
        finally:
            client.logout()
