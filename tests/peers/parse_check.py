"""Independent parsers read every file given: python-hl7 and hl7apy must both accept it.

Prints one line per file (`ok NAME segments=N`) and exits 1 on the first failure, naming the
parser and its error. The files are HL7v2 with CR segment ends, in ISO-8859-1 or UTF-8 as their
MSH-18 says.

OMP^O09 messages are also validated strictly against the v2.5 message structure (hl7apy
STRICT: groups, required segments such as RXR, cardinalities). ORM^O01 and ORU^R01 are not:
hl7apy models ORM's order-detail choice as a sequence that requires OBR, and applies its own
length limits to OBX-5, so a strict check would refuse valid messages.
"""
import sys

import hl7
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message


def decode(raw: bytes) -> str:
    first = raw.split(b"\r", 1)[0]
    fields = first.split(b"|")
    charset = fields[17].decode("ascii", "replace") if len(fields) > 17 else ""
    return raw.decode("utf-8" if "UTF" in charset.upper() else "latin-1")


def main(paths):
    for path in paths:
        text = decode(open(path, "rb").read()).rstrip("\r")
        try:
            parsed = hl7.parse(text)
        except Exception as e:  # noqa: BLE001 - report whatever the peer raises
            print(f"python-hl7 refused {path}: {e!r}")
            return 1
        try:
            message = parse_message(text, find_groups=False)
        except Exception as e:  # noqa: BLE001
            print(f"hl7apy refused {path}: {e!r}")
            return 1
        if str(parsed.segment("MSH")[9]).startswith("OMP^O09"):
            try:
                strict = parse_message(
                    text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True
                )
                strict.validate()
            except Exception as e:  # noqa: BLE001
                print(f"hl7apy (strict v2.5 structure) refused {path}: {e!r}")
                return 1
        print(f"ok {path} segments={len(parsed)} hl7apy={len(message.children)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
