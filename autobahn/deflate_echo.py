"""A WebSocket echo server that negotiates permessage-deflate (RFC 7692).

The upstream for Autobahn cases 12 and 13: ringway-load's echo does not compress, so these cases
run against this server (directly, and through the gateway, which passes the negotiation end to
end). It accepts whatever permessage-deflate parameters the client offers, echoes text as text and
binary as binary, and sends no keepalive pings. It binds a loopback port (0 = any free port) and
prints `listening on HOST:PORT` on stdout once it accepts connections.

Usage: python deflate_echo.py [--listen 127.0.0.1:0]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory


async def echo(ws: ServerConnection) -> None:
    """Echoes every message back with its own type until the client closes."""
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to bind")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    async with serve(
        echo,
        host.strip("[]"),
        int(port),
        # Accept any client offer (window bits, no_context_takeover), as Autobahn 13.x probes them.
        compression=None,
        extensions=[ServerPerMessageDeflateFactory()],
        server_header="deflate-echo",
        max_size=None,
        max_queue=None,
        ping_interval=None,
        close_timeout=5,
    ) as server:
        sock = next(iter(server.sockets))
        addr = sock.getsockname()
        print(f"listening on {addr[0]}:{addr[1]}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
