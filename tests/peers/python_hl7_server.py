"""Reference EHR peer: python-hl7's asyncio MLLP server answering AA, storing nothing.

Plays the EHR in the README's "Try it in two minutes" (it receives the ORM^O01 of the shipped
`orm-o01` mapping) and is the python-hl7 comparison of the load benchmark
(benches/mllp_load.sh). Prints `PORT <n>` once listening on 127.0.0.1 (port 0 = any free port)
and serves until killed.

Each message is decoded by its MSH-18, as French senders label it: `8859/1` (Latin-1),
`8859/15` (Latin-9), `UNICODE UTF-8`, `ASCII`, or empty (ASCII, then Latin-1 for the senders
that leave it empty and send accents anyway). The ACK is encoded the same way. A message with
another MSH-18, or with bytes its MSH-18 does not allow, is answered AR with the reason in
MSA-3. A frame that is not HL7 ends its connection, with the reason on stderr; the server keeps
serving other connections.
"""
import asyncio
import sys

import hl7
from hl7.mllp import start_hl7_server

# MSH-18 (first repetition, upper case) -> Python codec; None = ASCII, else Latin-1.
CODECS = {
    "": None,
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/15": "iso-8859-15",
    "UNICODE UTF-8": "utf-8",
}
EXPECTED = ", ".join(f"`{name}`" for name in CODECS if name)


def msh18(block):
    """MSH-18 of a raw frame (bytes), read from the MSH segment without decoding the rest."""
    end = len(block)
    for terminator in (b"\r", b"\n"):
        found = block.find(terminator, 0, end)
        if found != -1:
            end = found
    msh = block[:end]
    if not msh.startswith(b"MSH") or len(msh) < 5:
        return ""
    # Split on MSH-1: index 0 is `MSH`, index n-1 is MSH-n; MSH-2[1] is the repetition mark.
    fields = msh.split(msh[3:4])
    if len(fields) < 18:
        return ""
    repetition = fields[1][1:2] or b"~"
    return fields[17].split(repetition)[0].strip().decode("latin-1").upper()


def decode(block):
    """(text, codec, reason): the frame decoded by its MSH-18; reason is set when it is refused."""
    name = msh18(block)
    if name not in CODECS:
        reason = f"unsupported MSH-18 `{name}`: expected {EXPECTED} or empty"
        return block.decode("latin-1"), "latin-1", reason
    codec = CODECS[name]
    try:
        return block.decode(codec or "ascii"), codec or "ascii", None
    except UnicodeDecodeError as error:
        if codec is None:
            return block.decode("latin-1"), "latin-1", None
        byte = block[error.start]
        reason = f"MSH-18 is `{name}` but byte 0x{byte:02X} at offset {error.start} is not {codec}"
        return block.decode("latin-1"), "latin-1", reason


def answer(block):
    """The encoded ACK for one raw frame."""
    text, codec, reason = decode(block)
    ack = hl7.parse(text).create_ack("AR" if reason else "AA")
    if reason:
        ack.segment("MSA").assign_field(reason, 3)
    return str(ack).encode(codec, "replace")


async def handle(reader, writer):
    try:
        while not writer.is_closing():
            block = await reader.readblock()
            writer.writeblock(answer(block))
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    except Exception as error:  # a bad frame ends its connection, not the server
        peer = writer.get_extra_info("peername")
        print(f"python_hl7_server: {peer}: closing: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)
    finally:
        if not writer.is_closing():
            writer.close()


async def main(port):
    async with await start_hl7_server(handle, host="127.0.0.1", port=port, limit=1 << 20) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"PORT {bound}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
