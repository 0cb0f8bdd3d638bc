"""A TCP proxy the tests own, to slow down or cut a shard's or the broker's connections
(loopback only)."""

from __future__ import annotations

import asyncio
import threading

from deploy.local import free_port


class Proxy:
    """Forwards 127.0.0.1:port → 127.0.0.1:target, holding each client→server chunk ``delay``
    seconds (one round trip per query: the query is delayed, the answer is not)."""

    def __init__(self, target: int, delay: float = 0.0) -> None:
        self.target = target
        self.delay = delay
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()  # both ends of every open connection
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Proxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop serving, end every connection's pumps, then the loop (closed, so no pump is left
        to be collected half-run in a later test)."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self) -> int:
        """Close every open connection at once, both ends (new ones are accepted as before);
        how many were cut."""
        return asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    async def _cut(self) -> int:
        writers, self._writers = self._writers, set()
        for writer in writers:
            writer.transport.abort()  # no FIN handshake: what a dropped link looks like
        return len(writers) // 2

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        running = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pump(source, sink, delayed: bool) -> None:
            try:
                while chunk := await source.read(65536):
                    if delayed and self.delay:
                        await asyncio.sleep(self.delay)
                    sink.write(chunk)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()
                self._writers.discard(sink)

        try:
            await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
        except asyncio.CancelledError:
            pass  # the proxy is stopping (``_shutdown``): the connection ends with it
