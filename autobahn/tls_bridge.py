"""A byte pipe from plain TCP to TLS, so the Autobahn case runner (kosoku, built without TLS) can drive the
gateway's wss:// listener: every byte the runner sends goes unchanged into the TLS connection and back.

    python tls_bridge.py --listen 127.0.0.1:0 --to 127.0.0.1:8443 --ca cert.pem --name localhost

Prints "listening on HOST:PORT" once ready. One TLS connection per accepted connection; either side closing
closes the other.
"""

import argparse
import asyncio
import ssl


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
        except (OSError, RuntimeError):
            writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--name", default="localhost")
    args = parser.parse_args()
    context = ssl.create_default_context(cafile=args.ca)
    to_host, to_port = args.to.rsplit(":", 1)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                to_host, int(to_port), ssl=context, server_hostname=args.name
            )
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        for w in (writer, up_writer):
            w.close()

    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(serve, host, int(port))
    addr = server.sockets[0].getsockname()
    print(f"listening on {addr[0]}:{addr[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
