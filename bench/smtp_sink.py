"""A minimal SMTP sink for bench/send.py: accepts every mail, counts it, keeps nothing.

aiosmtpd parses every command into objects, builds an envelope and runs handler hooks for
each mail; on 2 cores that costs the bench as much as the sending it is meant to measure. This
sink speaks just enough SMTP for smtplib (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) on
one asyncio protocol per connection and only looks for the end of DATA ("\\r\\n.\\r\\n").
Several processes can serve one port (SO_REUSEPORT): the kernel spreads connections over them.
Not a mail server: no checks, no dot-unstuffing, no size limit. Bench use only.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

_EHLO = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
_REPLIES = {
    b"HELO": b"250 sink\r\n",
    b"MAIL": b"250 OK\r\n",
    b"RCPT": b"250 OK\r\n",
    b"RSET": b"250 OK\r\n",
    b"NOOP": b"250 OK\r\n",
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    b"QUIT": b"221 Bye\r\n",
}
_END_OF_DATA = b"\r\n.\r\n"


class _Session(asyncio.Protocol):
    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self.buffer = b""
        self.in_data = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        replies = []
        while self.buffer:
            if self.in_data:
                end = self.buffer.find(_END_OF_DATA)
                if end < 0:
                    # Keep only what may be the start of the terminator.
                    self.buffer = self.buffer[-4:]
                    break
                self.buffer = self.buffer[end + len(_END_OF_DATA) :]
                self.in_data = False
                with self.counter.get_lock():
                    self.counter.value += 1
                replies.append(b"250 OK queued\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            verb = line[:4].upper()
            if verb == b"EHLO":
                replies.append(_EHLO)
            else:
                replies.append(_REPLIES.get(verb, b"250 OK\r\n"))
            if verb == b"DATA":
                self.in_data = True
                # The mail follows at once: a lone "." line may come right after "354".
                self.buffer = b"\r\n" + self.buffer
            elif verb == b"QUIT":
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
        if replies:
            self.transport.write(b"".join(replies))


def serve(port: int, counter: Any, stop: Any) -> None:
    """Run the sink on 127.0.0.1:`port` until `stop` (a multiprocessing Event) is set."""

    async def main() -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(512)
        server = await asyncio.get_running_loop().create_server(
            lambda: _Session(counter), sock=listener
        )
        async with server:
            while not stop.is_set():
                await asyncio.sleep(0.2)

    asyncio.run(main())
