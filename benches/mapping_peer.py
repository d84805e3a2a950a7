#!/usr/bin/env python3
"""Peer for `cargo bench --bench mapping`: hand-written Python that reads the same Posos bundle
JSON and builds the same ORM^O01 as mappings/orm-o01.toml (patient not in the census), checked
byte for byte against tests/golden/orm-o01/two-drugs-prednisone-taper.hl7, then timed: read +
build + encode per bundle. It knows this bundle's shape only (no tolerance for other spellings,
no error locations), so it is an optimistic peer.

    python3 benches/mapping_peer.py [iterations]
"""
import json
import pathlib
import sys
import time
from datetime import datetime
from zoneinfo import ZoneInfo

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples/posos/two-drugs-prednisone-taper.json"
GOLDEN = ROOT / "tests/golden/orm-o01/two-drugs-prednisone-taper.hl7"
NOW = "2026-01-05T10:05:00+01:00"
CONTROL_ID = "GOLDEN-two-drugs-prednisone-taper"
PARIS = ZoneInfo("Europe/Paris")
KINDS = {"urn:oid:1.2.250.1.213.2.3.2": "CIP", "urn:oid:1.2.250.1.213.2.61": "UCD",
         "urn:oid:1.2.250.1.213.2.3.1": "CIS"}
ESC = str.maketrans({"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "~": "\\R\\", "&": "\\T\\"})


def esc(text):
    return (text or "").translate(ESC).replace("\n", "\\.br\\")


def hl7_time(text):
    return datetime.fromisoformat(text).astimezone(PARIS).strftime("%Y%m%d%H%M%S")


def fields(segment_id, values):
    """values: {field number: text}; highest field decides the length."""
    top = max(values)
    return segment_id + "|" + "|".join(values.get(i, "") for i in range(1, top + 1))


def comps(*parts):
    out = list(parts)
    while out and not out[-1]:
        out.pop()
    return "^".join(out)


def build(body, control_id, now):
    bundle = json.loads(body)
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    group = next(r for r in by_url.values() if r["resourceType"] == "RequestGroup")
    patient = by_url[group["subject"]["reference"]]
    author = by_url[group["author"]["reference"]]
    ipp = next(i["value"] for i in patient["identify"] if i["system"] == "id://partner")
    name = patient["name"][0]
    rpps = author["identify"][0]["value"]
    out = [
        # MSH keys count from MSH-2: MSH-1 is the separator itself.
        fields("MSH", {1: "^~\\&", 2: "ORDOBRIDGE", 3: "POSOS", 4: "DPI", 5: "CH_EXEMPLE",
                       6: hl7_time(now), 8: "ORM^O01^ORM_O01", 9: esc(control_id), 10: "P",
                       11: "2.5", 17: "8859/1"}),
        fields("PID", {1: "1", 3: comps(esc(ipp), "", "", "CH_EXEMPLE", "PI"),
                       5: comps(esc(name["family"].upper()), esc(" ".join(name["given"]).upper()),
                                "", "", "", "", "D"),
                       7: patient["birthDate"].replace("-", ""),
                       8: {"female": "F", "male": "M"}.get(patient["gender"], "U")}),
        fields("PV1", {1: "1", 2: "I"}),
    ]
    prescriber = comps(esc(rpps), esc(author["name"][0]["family"].upper()),
                       esc(author["name"][0]["given"][0]), "", "", "", "", "",
                       "ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO", "L", "", "", "RPPS")
    for index, action in enumerate(group["action"], start=1):
        request = by_url[action["resource"]["reference"]]
        if "medicationReference" in request:
            medication = by_url[request["medicationReference"]["reference"]]
            concept, form = medication["coded"], medication.get("form", {}).get("text")
        else:
            concept, form = request["medicationCodeableConcept"], None
        coding = concept["coding"][0]
        out.append(fields("ORC", {1: "NW", 2: esc(f"{group['id']}-{index}"),
                                  9: hl7_time(group["authoredOn"]), 12: prescriber}))
        rxo = {1: comps(esc(coding["coded"]), esc(coding.get("display") or concept.get("text")),
                        KINDS.get(coding["system"], "L"))}
        if form:
            rxo[5] = "^" + esc(form)
        out.append(fields("RXO", rxo))
        dosages = request.get("dosageInstruction", [])
        route = dosages[0].get("route") if dosages else None
        if route:
            out.append(fields("RXR", {1: comps(esc(route["coding"][0]["coded"]),
                                               esc(route["coding"][0]["display"]))}))
        for step, dosage in enumerate(dosages, start=1):
            if dosage.get("text"):
                out.append(fields("NTE", {1: str(step), 2: "P", 3: esc(dosage["text"])}))
    return ("\r".join(out) + "\r").encode("latin-1")


def main():
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    body = SAMPLE.read_bytes()
    produced = build(body, CONTROL_ID, NOW)
    golden = GOLDEN.read_bytes()
    if produced != golden:
        sys.exit(f"peer output differs from the golden message:\n{produced!r}\n{golden!r}")
    best = None
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iterations):
            build(body, CONTROL_ID, NOW)
        rate = iterations / (time.perf_counter() - start)
        best = rate if best is None else max(best, rate)
        print(f"python peer: {rate:,.0f} bundles/s")
    print(f"python peer best of 5: {best:,.0f} bundles/s (read + build + encode, orm-o01)")


if __name__ == "__main__":
    main()
