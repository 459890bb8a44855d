"""Idle memory per subscribed connection: opens N WebSocket connections to URL, subscribes each to
`chat`, and reports the growth of the server's RSS (VmRSS of PID) per connection.

    python bench/idle_rss.py ws://127.0.0.1:8000/ $(pgrep -f socketapi_docs) 5000

Needs the `websockets` package (target/py after scripts/test.sh). Stays under this sandbox's
20 000 open files per process.
"""
import asyncio, json, sys, websockets
url, pid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
async def one(i, conns):
    ws = await websockets.connect(url, max_size=None, ping_interval=None)
    await ws.send(json.dumps({"type":"subscribe","channel":"chat"}))
    await ws.recv()
    conns.append(ws)
async def main():
    before = rss(); conns=[]
    for k in range(0, n, 500):
        await asyncio.gather(*(one(i, conns) for i in range(k, min(n,k+500))))
    await asyncio.sleep(1)
    after = rss()
    print(f"{n} conns: before {before} KiB after {after} KiB => {(after-before)/n:.2f} KiB/conn")
asyncio.run(main())
