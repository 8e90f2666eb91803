#!/usr/bin/env python3
"""Times `list_archives` with a full-text `query` on a large archive.

Starts nothing: point it at a running chatgate (started with the demo
provisioning and `--rate-limit-per-sec 0`), it fills the archive through the
Web API (`start_chat` with inactive threads of N messages each), then times
searches and prints one line per query with p50 / max over the repeats.

    python3 loadtest/probe/archive_search.py http://127.0.0.1:8080 CHATS EVENTS_PER_CHAT

Bounded: CHATS * EVENTS_PER_CHAT events, 8 writer threads, 20 repeats per
query. Standard library only.
"""
import json
import random
import statistics
import sys
import threading
import time
import urllib.request

TOKEN = "Bearer alice-pat-1"
WORDS = ("order parcel refund invoice delivery address payment account login "
         "password discount coupon shipping return warranty size colour stock "
         "price tracking courier label email phone cancel upgrade").split()


def call(base, method, body):
    req = urllib.request.Request(
        f"{base}/v3.5/agent/action/{method}",
        data=json.dumps(body).encode(),
        headers={"Authorization": TOKEN, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def fill(base, chats, per_chat):
    counter = iter(range(chats))
    lock = threading.Lock()

    def worker():
        rnd = random.Random()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            events = []
            for j in range(per_chat):
                n = i * per_chat + j
                text = " ".join(rnd.choice(WORDS) for _ in range(8))
                events.append({"type": "message", "text": f"msg{n} {text}"})
            # One rare word per 1,000 chats: a selective query.
            if i % 1000 == 7:
                events[0]["text"] += " zanzibar"
            call(base, "start_chat",
                 {"chat": {"thread": {"events": events}}, "active": False})

    threads = [threading.Thread(target=worker) for _ in range(8)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.time() - t0


def timed(base, body, repeats=20):
    times = []
    found = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = call(base, "list_archives", body)
        times.append((time.perf_counter() - t0) * 1000)
        found = r["found_chats"]
    return found, statistics.median(times), max(times)


def main():
    base, chats, per_chat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    secs = fill(base, chats, per_chat)
    total = chats * per_chat
    print(f"filled {chats} threads / {total} events in {secs:.1f} s "
          f"({total / secs:.0f} events/s)")
    for name, body in [
        ("rare word (zanzibar)", {"filters": {"query": "zanzibar"}, "highlights": {}}),
        ("one exact message (msg12345)", {"filters": {"query": f"msg{min(12345, total - 1)}"}}),
        ("two common words, limit 10", {"filters": {"query": "refund parcel"}}),
        ("two common words, limit 100, highlights",
         {"filters": {"query": "refund parcel"}, "limit": 100, "highlights": {}}),
        ("no query, limit 10", {}),
    ]:
        found, p50, worst = timed(base, body)
        print(f"{name:45s} found_chats={found:8d}  p50 {p50:8.1f} ms  max {worst:8.1f} ms")


if __name__ == "__main__":
    main()
