"""A Dovecot-protocol SASL server for the private Postfix (``smtpd_sasl_type = dovecot``), on loopback TCP.

Postfix asks Dovecot's auth service whether a login is good over a small line protocol; this speaks
the server side of it (PLAIN and LOGIN, one password per login), so the end-to-end suite can have
Postfix authenticate members and pass ``{auth_authen}`` to the milter, with no Dovecot installed.
"""

from __future__ import annotations

import base64
import os
import socketserver
import threading
from collections.abc import Mapping


class _Handler(socketserver.StreamRequestHandler):
    server: DovecotAuth._Server

    def handle(self) -> None:
        greeting = (
            "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
            f"SPID\t{os.getpid()}\nCUID\t1\nCOOKIE\t{'0' * 32}\nDONE\n"
        )
        self.wfile.write(greeting.encode())
        pending: dict[str, list[str]] = {}  # LOGIN: the answers given so far, by request id
        for raw in self.rfile:
            fields = raw.decode("utf-8", "replace").rstrip("\n").split("\t")
            if fields[0] == "AUTH" and len(fields) >= 3:
                request, mechanism = fields[1], fields[2].upper()
                response = next((f[5:] for f in fields[3:] if f.startswith("resp=")), None)
                if mechanism == "PLAIN" and response is not None:
                    self._plain(request, response)
                elif mechanism == "PLAIN":
                    self._send(f"CONT\t{request}\t")
                else:
                    pending[request] = []
                    self._send(f"CONT\t{request}\t{base64.b64encode(b'Username:').decode()}")
            elif fields[0] == "CONT" and len(fields) >= 3:
                request, data = fields[1], fields[2]
                if request in pending:
                    pending[request].append(base64.b64decode(data).decode())
                    if len(pending[request]) == 1:
                        self._send(f"CONT\t{request}\t{base64.b64encode(b'Password:').decode()}")
                    else:
                        login, password = pending.pop(request)
                        self._verdict(request, login, password)
                else:
                    self._plain(request, data)

    def _plain(self, request: str, response: str) -> None:
        try:
            _authzid, login, password = base64.b64decode(response).decode().split("\0")
        except ValueError:
            self._send(f"FAIL\t{request}")
            return
        self._verdict(request, login, password)

    def _verdict(self, request: str, login: str, password: str) -> None:
        if self.server.users.get(login) == password:
            self._send(f"OK\t{request}\tuser={login}")
        else:
            self._send(f"FAIL\t{request}\tuser={login}")

    def _send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\n")
        self.wfile.flush()


class DovecotAuth:
    """``start()`` on a free loopback port; ``path`` is what ``smtpd_sasl_path`` names."""

    class _Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        users: Mapping[str, str]

    def __init__(self, users: Mapping[str, str]) -> None:
        self._server = self._Server(("127.0.0.1", 0), _Handler)
        self._server.users = dict(users)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def path(self) -> str:
        host, port = self._server.server_address[:2]
        return f"inet:{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
