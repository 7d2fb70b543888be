"""The owner task's cost per media chunk (one JSON line): CPU microseconds for a WebRTC mic frame
to pass through the connection's Mailbox (a slot, a queue put and get, the error guard) to a
handler that does nothing, against calling that handler directly. At 50 frames per second per
session, this is the price of one owner task per connection.

    python bench/mailbox.py [--frames 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from streaming.gateway.mailbox import Mailbox


async def measure(frames: int) -> dict:
    box = Mailbox(inbound=None, send=None, max_bytes=1 << 20)
    owner = asyncio.create_task(box.run())
    handled = 0
    all_handled = asyncio.Event()

    async def handler() -> None:
        nonlocal handled
        handled += 1
        if handled == frames:
            all_handled.set()

    t0 = time.process_time()
    for _ in range(frames):
        await box.media(handler)
    await all_handled.wait()
    through_s = time.process_time() - t0
    box.stop()
    await owner
    t0 = time.process_time()
    for _ in range(frames):
        await handler()
    direct_s = time.process_time() - t0
    return {
        "frames": frames,
        "mailbox_us_per_frame": round(through_s / frames * 1e6, 2),
        "direct_us_per_frame": round(direct_s / frames * 1e6, 2),
        "cpu_share_at_50_fps_per_session": round(through_s / frames * 50, 6),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000)
    print(json.dumps(asyncio.run(measure(ap.parse_args().frames))))


if __name__ == "__main__":
    main()
