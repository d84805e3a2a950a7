"""Test EHR for documents: python-hl7's asyncio MLLP server that reads each document message
(ORU^R01 or MDM^T02 with an OBX of type ED) as an EHR would, and answers AA.

For each message it writes one JSON line to the log file (first argument), before answering:
  {"control_id", "type": MSH-9, "ed": [OBX-5.2, OBX-5.3, OBX-5.4], "size", "sha256" of the
   Base64-decoded OBX-5.5, "hl7apy": "ok" or the error hl7apy raised parsing the message,
   "segments": the segment ids in order}
so the test compares the decoded bytes with what it sent. A message python-hl7 cannot parse,
or whose OBX-5.5 is not Base64, is answered AR with the reason (and logged with "error").

Prints `PORT <n>` once listening on 127.0.0.1 (second argument; 0 or absent = any free port)
and serves until killed. A third argument `fast` answers AA without reading the document (the
benchmark's EHR: benches/documents.sh).
"""
import asyncio
import base64
import binascii
import hashlib
import json
import sys

import hl7
from hl7.mllp import start_hl7_server
from hl7apy.parser import parse_message


def inspect(message):
    text = str(message)
    msh = message.segment("MSH")
    record = {
        "control_id": str(msh[10]),
        "type": str(msh[9]),
        "segments": [str(segment[0]) for segment in message],
    }
    obx = message.segment("OBX")
    ed = obx[5][0]
    record["ed"] = [str(ed[1]), str(ed[2]), str(ed[3])]
    data = base64.b64decode(str(ed[4]), validate=True)
    record["size"] = len(data)
    record["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        parse_message(text, find_groups=False)
        record["hl7apy"] = "ok"
    except Exception as e:  # noqa: BLE001 - report whatever the peer raises
        record["hl7apy"] = repr(e)
    return record


def make_handler(log_path, fast):
    async def handle(reader, writer):
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                control = str(message.segment("MSH")[10])
                try:
                    record = {"control_id": control} if fast else inspect(message)
                    code, text = "AA", ""
                except (KeyError, IndexError, ValueError, binascii.Error) as e:
                    record = {"control_id": control, "error": repr(e)}
                    code, text = "AR", "unreadable document"
                with open(log_path, "a", encoding="utf-8") as log:
                    log.write(json.dumps(record) + "\n")
                writer.writemessage(
                    hl7.parse(
                        f"MSH|^~\\&|EHR|CHU|ORDO|DOCS|20240101120000||ACK|ACK-{control}|P|2.5\r"
                        f"MSA|{code}|{control}|{text}"
                    )
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    return handle


async def main(log_path, port, fast):
    async with await start_hl7_server(
        make_handler(log_path, fast), host="127.0.0.1", port=port, limit=64 << 20
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"PORT {bound}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1],
            int(sys.argv[2]) if len(sys.argv) > 2 else 0,
            len(sys.argv) > 3 and sys.argv[3] == "fast",
        )
    )
