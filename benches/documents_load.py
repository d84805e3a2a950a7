"""Load client for `$send-to-ehr` (stdlib only): sends N synthetic PDFs of SIZE bytes from
C concurrent connections, then polls `$tracking` until every document is `completed`.

    python3 benches/documents_load.py BASE_URL TOKEN PATIENT_ID N C SIZE

Each body streams one shared payload (no copy per request); documents differ by their title,
so none is a duplicate of another. Prints accepted/s (200 answers), delivered/s (all
`completed`), and the p50/p99 latency of the send.
"""
import base64
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse


def main(base, token, patient, count, concurrency, size):
    url = urllib.parse.urlparse(base)
    payload = b"%PDF-1.4\n" + os.urandom(max(size - 9, 0))
    encoded = base64.b64encode(payload)
    transactions, latencies, errors = [], [], []
    lock = threading.Lock()
    next_index = iter(range(count))

    def worker():
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            head = json.dumps({"resourceType": "Parameters", "parameter": [
                {"name": "subject", "valueReference": {"reference": f"Patient/{patient}"}},
                {"name": "document-title", "valueString": f"bench {index} {time.time_ns()}"},
            ]})[:-2].encode() + b', {"name": "payload", "valueBase64Binary": "'
            tail = b'"}]}'
            started = time.perf_counter()
            connection.request(
                "POST",
                "/fhir/CommunicationRequest/$send-to-ehr",
                body=iter([head, encoded, tail]),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/fhir+json",
                    "Content-Length": str(len(head) + len(encoded) + len(tail)),
                },
            )
            response = connection.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
            with lock:
                if response.status == 200:
                    answer = json.loads(body)
                    transactions.append(answer["parameter"][1]["valueString"])
                    latencies.append(elapsed)
                else:
                    errors.append((response.status, body[:300]))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted_in = time.perf_counter() - started
    if errors:
        print(f"errors: {len(errors)}, first: {errors[0]}", file=sys.stderr)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    pending = list(transactions)
    while pending:
        still = []
        for transaction in pending:
            connection.request(
                "GET",
                f"/fhir/CommunicationRequest/$tracking?transaction-id={transaction}",
                headers={"Authorization": f"Bearer {token}"},
            )
            tracking = json.loads(connection.getresponse().read())
            statuses = {e["resource"]["status"] for e in tracking["entry"]}
            if statuses != {"completed"}:
                still.append(transaction)
        pending = still
        if pending:
            time.sleep(0.05)
    delivered_in = time.perf_counter() - started
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    print(
        f"documents={len(transactions)} size={size} concurrency={concurrency} "
        f"accepted/s={len(transactions) / accepted_in:.1f} delivered/s={len(transactions) / delivered_in:.1f} "
        f"send p50={p(0.5):.1f}ms p99={p(0.99):.1f}ms errors={len(errors)}"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])))
