"""Test receiver: python-hl7's asyncio MLLP server answering by control-id (MSH-10) prefix.

Each received MSH-10 is appended, one per line, to the file given as first argument before
the answer is written, so tests can assert the order (and the repeats) of what arrived.

Answers, by MSH-10 prefix:
  AR-      MSA|AR (refused for good)
  AE-      MSA|AE (always)
  FLAKY-   MSA|AE for the first two copies of that MSH-10, then MSA|AA
  WRONG-   MSA|AA, but MSA-2 names another message
  SILENT-  nothing (the sender times out)
  other    MSA|AA

Messages are read as ISO-8859-1 (any byte is a character), as ordobridge's mappings write.

Prints `PORT <n>` once listening on 127.0.0.1 (second argument; 0 or absent = any free port)
and serves until killed.

A third argument names a file where each connection, as it opens, appends one line: how many
connections are open with it (`1` when it is alone), so a test can check that never two
senders were connected at once.
"""
import asyncio
import sys
from collections import Counter

import hl7
from hl7.mllp import start_hl7_server

SEEN = Counter()
OPEN = 0


def control_id(message):
    # MSH-10: the MSH line split on `|` has MSH-1 (the separator) missing, so index 9.
    fields = str(message).split("\r")[0].split("|")
    return fields[9] if len(fields) > 9 else ""


def answer(control):
    SEEN[control] += 1
    if control.startswith("SILENT-"):
        return None
    if control.startswith("AR-"):
        code, acked, text = "AR", control, "refused by test receiver"
    elif control.startswith("AE-"):
        code, acked, text = "AE", control, "temporary failure"
    elif control.startswith("FLAKY-") and SEEN[control] <= 2:
        code, acked, text = "AE", control, f"busy ({SEEN[control]})"
    elif control.startswith("WRONG-"):
        code, acked, text = "AA", "OTHER-" + control, ""
    else:
        code, acked, text = "AA", control, ""
    return hl7.parse(
        f"MSH|^~\\&|EHR|CHU|ORDO|POSOS|20240101120000||ACK|ACK-{control}|P|2.5\r"
        f"MSA|{code}|{acked}|{text}"
    )


def make_handler(log_path, connections_path):
    async def handle(reader, writer):
        global OPEN
        OPEN += 1
        if connections_path:
            with open(connections_path, "a", encoding="utf-8") as log:
                log.write(f"{OPEN}\n")
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                control = control_id(message)
                with open(log_path, "a", encoding="utf-8") as log:
                    log.write(control + "\n")
                ack = answer(control)
                if ack is not None:
                    writer.writemessage(ack)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            OPEN -= 1
            if not writer.is_closing():
                writer.close()

    return handle


async def main(log_path, port, connections_path):
    async with await start_hl7_server(
        make_handler(log_path, connections_path),
        host="127.0.0.1",
        port=port,
        limit=1 << 20,
        # ordobridge writes what MSH-18 says (8859/1 by default): accented text must not
        # kill the connection (python-hl7 reads ASCII unless told).
        encoding="iso-8859-1",
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"PORT {bound}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1],
            int(sys.argv[2]) if len(sys.argv) > 2 else 0,
            sys.argv[3] if len(sys.argv) > 3 else None,
        )
    )
