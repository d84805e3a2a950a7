"""Launch latency: N sequential `GET /launch/scan` against a running daemon (sample config,
built-in simulator), each answered 302. Reports p50/p99/max in ms of:

- what ordobridge adds (access check, census lookup, scan-token request build, redirect), read
  from the `Server-Timing: ordobridge;dur=…` header the daemon sets on every launch: the
  issue's figure, "excluding the Posos call";
- the Posos call (the in-process simulator over loopback HTTP), `posos;dur=…`;
- the whole round trip seen by this client.

    python3 benches/launch_latency.py [N] [HOST:PORT] [IPP]
"""
import http.client
import statistics
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
host, port = (sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:8717").split(":")
ipp = sys.argv[3] if len(sys.argv) > 3 else "100001"
path = f"/launch/scan?ipp={ipp}&rpps=10003456789&first_name=Pierre&last_name=Leblanc"


def timing(value):
    out = {}
    for part in value.split(","):
        fields = part.strip().split(";")
        for field in fields[1:]:
            if field.startswith("dur="):
                out[fields[0]] = float(field[4:])
    return out


conn = http.client.HTTPConnection(host, int(port))
own, posos, total = [], [], []
for _ in range(n):
    start = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    total.append((time.perf_counter() - start) * 1000)
    if response.status != 302:
        sys.exit(f"unexpected status {response.status}: is IPP {ipp} in the census?")
    t = timing(response.getheader("server-timing", ""))
    own.append(t["ordobridge"])
    posos.append(t["posos"])


def line(name, samples):
    samples = sorted(samples)
    p99 = samples[max(int(len(samples) * 0.99) - 1, 0)]
    return (f"{name:<28} p50={statistics.median(samples):.3f} ms p99={p99:.3f} ms "
            f"max={samples[-1]:.3f} ms")


print(f"launches={n}")
print(line("ordobridge (excl. Posos)", own))
print(line("posos simulator call", posos))
print(line("client round trip", total))
