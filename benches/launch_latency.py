"""Launch latency: N sequential `GET /launch/scan` against a running daemon (sample config,
built-in simulator), each answered 302. Reports p50/p99/max in ms.

The figure includes the call to the (in-process) Posos simulator: it is an upper bound of the
latency ordobridge adds (context lookup + request build + redirect).

    python3 benches/launch_latency.py [N] [HOST:PORT]
"""
import http.client
import statistics
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
host, port = (sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:8717").split(":")
path = "/launch/scan?ipp=100001&rpps=10003456789&first_name=Pierre&last_name=Leblanc"
conn = http.client.HTTPConnection(host, int(port))
samples = []
for _ in range(n):
    start = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    samples.append((time.perf_counter() - start) * 1000)
    if response.status != 302:
        sys.exit(f"unexpected status {response.status}")
samples.sort()
print(f"launches={n} p50={statistics.median(samples):.3f} ms "
      f"p99={samples[int(len(samples) * 0.99) - 1]:.3f} ms max={samples[-1]:.3f} ms")
