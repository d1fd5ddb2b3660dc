"""An HTTP client that authenticates with NTLM or Negotiate (SPNEGO) through pyspnego, one keep-alive connection
per run, for the lab's captures: ``python3 tests/http_ntlm_client.py SCHEME HOST PATH USER PASSWORD``.

Prints each response's status line; exit status 0 when the last one is 200."""

from __future__ import annotations

import base64
import socket
import sys

import spnego

MAX_ROUNDS = 4


def main() -> int:
    scheme, host, path, user, password = sys.argv[1:6]
    context = spnego.client(user, password, hostname=host, service="HTTP",
                            protocol="ntlm" if scheme == "NTLM" else "negotiate")  # fmt: skip
    token = context.step()
    status = ""
    with socket.create_connection((host, 80), 10) as sock, sock.makefile("rb") as replies:
        for _ in range(MAX_ROUNDS):
            request = (f"GET {path} HTTP/1.1\r\nHost: mail.leakscope.test\r\nUser-Agent: lab-client\r\n"
                       f"Authorization: {scheme} {base64.b64encode(token or b'').decode()}\r\n\r\n")  # fmt: skip
            sock.sendall(request.encode())
            status = replies.readline().decode().strip()
            headers: dict[str, list[str]] = {}
            while line := replies.readline().decode().strip():
                name, _, value = line.partition(":")
                headers.setdefault(name.lower(), []).append(value.strip())
            replies.read(int(headers.get("content-length", ["0"])[0]))
            print(status, flush=True)
            tokens = [v.split(" ", 1)[1] for v in headers.get("www-authenticate", []) if " " in v]
            if " 401 " not in f"{status} " or not tokens:
                break
            token = context.step(base64.b64decode(tokens[0]))
    return 0 if " 200 " in f"{status} " else 1


if __name__ == "__main__":
    sys.exit(main())
