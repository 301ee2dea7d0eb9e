# A client that floods {"type":"ping"} text frames and ping frames and never
# reads, printing the node's RSS each second (from /proc: run it on the node's host).
# Usage: python3 docs/ping_flood.py HTTP_PORT NODE_PID TOKEN SECONDS
# (SMALLBUF=1 shrinks the client's receive buffer to 4 KiB.)
import os, socket, sys, time
port, pid, token, secs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
s = socket.create_connection(("127.0.0.1", port))
if os.environ.get("SMALLBUF"): s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.sendall(("GET /ws?token=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % token).encode())
resp = b""
while b"\r\n\r\n" not in resp:
    resp += s.recv(1)
assert b" 101 " in resp, resp
def frame(op, payload):
    return bytes([0x80 | op, 0x80 | len(payload)]) + b"\0\0\0\0" + payload
chunk = (frame(1, b'{"type":"ping"}') + frame(9, b"hb")) * 2000
def rss():
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
import threading
sent = [0]
start = time.time()
print("rss at start: %d MiB" % rss())
def monitor():
    while True:
        time.sleep(1)
        t = time.time() - start
        print("t=%.0fs frames sent=%d rss=%d MiB" % (t, sent[0], rss()), flush=True)
        if t >= secs:
            os._exit(0)
threading.Thread(target=monitor, daemon=True).start()
try:
    while True:
        s.sendall(chunk); sent[0] += 4000
except OSError as e:
    print("connection closed by the node after %.1f s: %s" % (time.time() - start, e), flush=True)
    time.sleep(secs)
