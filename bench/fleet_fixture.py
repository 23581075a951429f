#!/usr/bin/env python3
"""Benchmark fixture for `agentctl fleet status` (bench/fleet.sh): N HTTP endpoints on
127.0.0.1, ports BASE..BASE+N-1, each answering every request after DELAY seconds with a recorded
answer of a real agent: /me/status, /plugins/list and /me/ns (the three calls of a probe), from
the files status.json, plugins.json and ns.json in DIR. Keep-alive, like the agent.
Prints "ready" on stdout once every port listens; runs until killed.

    fleet_fixture.py DIR BASE N DELAY
"""
import asyncio
import sys

MAX_HEAD = 64 * 1024


async def main() -> None:
    data_dir, base, count, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    bodies = {}
    for path, name in (("/me/status", "status.json"), ("/plugins/list", "plugins.json"), ("/me/ns", "ns.json")):
        with open(f"{data_dir}/{name}", "rb") as f:
            bodies[path] = f.read()
    not_found = b'{"error": "no endpoint"}'

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_HEAD:
                    break
                target = head.split(b" ", 2)[1].decode("latin-1", "replace")
                body = bodies.get(target.split("?", 1)[0])
                status = b"200 OK" if body is not None else b"404 Not Found"
                body = body if body is not None else not_found
                await asyncio.sleep(delay)
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(serve, "127.0.0.1", base + i, backlog=256) for i in range(count)]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
