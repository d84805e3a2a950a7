#!/usr/bin/env python3
# Regenerate with: cd samples/adt && python3 generate.py
# Generates synthetic PAM FR ADT samples (fictitious people, test INS OID .10).
def seg(name, fields):
    # fields: dict position -> value
    n = max(fields)
    return name + "|" + "|".join(fields.get(i, "") for i in range(1, n + 1))

def msh(ev, struct, cid, ts, charset="UNICODE UTF-8"):
    f = {2: "DPI_SYNTH", 3: "CH_EXEMPLE", 4: "ORDOBRIDGE", 5: "POSOS", 6: ts,
         8: f"ADT^{ev}^{struct}", 9: cid, 10: "P", 11: "2.5", 16: "FRA", 17: charset, 20: "2.11^IHE_FR"}
    # MSH-1 is the separator: MSH-2 is the first after "MSH|"; shift by one
    vals = {k: v for k, v in f.items()}
    n = max(vals)
    return "MSH|^~\\&|" + "|".join(vals.get(i, "") for i in range(2, n + 1))

AUTH = "CH_EXEMPLE&1.2.250.1.999.1&ISO"
RPPS = "ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"
DR1 = f"10003456789^LEBLANC^PIERRE^^^DR^^^{RPPS}"
DR2 = f"10009876543^ROUSSEAU^CLAIRE^^^DR^^^{RPPS}"

def pid(ipp, ins, family, given, dob, sex, nda, vali=True, birth=None):
    ids = f"{ipp}^^^{AUTH}^PI"
    if ins:
        ids += f"~{ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS"
    names = f"{birth or family}^{given}^{given}^^^^L"
    if birth:
        names += f"~{family}^{given}^^^^^D"
    return seg("PID", {1: "1", 3: ids, 5: names, 7: dob, 8: sex,
                       11: "12 RUE DES LILAS^^LYON^^69003^FRA^H", 18: f"{nda}^^^{AUTH}^AN" if nda else "",
                       32: "VALI" if vali else "PROV"})

def pv1(cls, unit, doctor, nda, admit, discharge=""):
    return seg("PV1", {1: "1", 2: cls, 3: f"{unit}^101^1^CH_EXEMPLE", 7: doctor, 10: "MED",
                       19: f"{nda}^^^{AUTH}^VN", 44: admit, 45: discharge})

def zbe(mvt, ts, action, unit, orig=""):
    return seg("ZBE", {1: f"{mvt}^CH_EXEMPLE", 2: ts, 4: action, 5: "N", 6: orig,
                       7: f"^^^^^^UF^^^{unit}"})

def evn(ev, ts):
    return seg("EVN", {2: ts, 6: ts})

msgs = {
 "01-a28-create-identity.hl7": [msh("A28", "ADT_A05", "SYN0001", "20261122080000"), evn("A28", "20261122080000"),
     pid("100001", "275046912345678", "MARTIN", "JEANNE", "19750412", "F", "", birth="DURAND"),
     seg("PV1", {1: "1", 2: "N"})],
 "02-a01-admit.hl7": [msh("A01", "ADT_A01", "SYN0002", "20261122081500"), evn("A01", "20261122081500"),
     pid("100001", "275046912345678", "MARTIN", "JEANNE", "19750412", "F", "900001", birth="DURAND"),
     pv1("I", "CARDIO", DR1, "900001", "20261122081500"),
     zbe("MVT0001", "20261122081500", "INSERT", "4010")],
 "03-a02-transfer.hl7": [msh("A02", "ADT_A02", "SYN0003", "20261122140000"), evn("A02", "20261122140000"),
     pid("100001", "275046912345678", "MARTIN", "JEANNE", "19750412", "F", "900001", birth="DURAND"),
     pv1("I", "PNEUMO", DR2, "900001", "20261122081500"),
     zbe("MVT0002", "20261122140000", "INSERT", "4020")],
 "04-a04-outpatient-prov.hl7": [msh("A04", "ADT_A01", "SYN0004", "20261122090000"), evn("A04", "20261122090000"),
     pid("100002", "", "BERNARD", "LUC", "19580930", "M", "900002", vali=False),
     pv1("O", "CONSULT", DR2, "900002", "20261122090000"),
     zbe("MVT0003", "20261122090000", "INSERT", "4100")],
 "05-a54-doctor-change.hl7": [msh("A54", "ADT_A54", "SYN0005", "20261122160000"), evn("A54", "20261122160000"),
     pid("100001", "275046912345678", "MARTIN", "JEANNE", "19750412", "F", "900001", birth="DURAND"),
     pv1("I", "PNEUMO", DR1, "900001", "20261122081500"),
     zbe("MVT0004", "20261122160000", "INSERT", "4020")],
 "06-a03-discharge.hl7": [msh("A03", "ADT_A03", "SYN0006", "20261123110000"), evn("A03", "20261123110000"),
     pid("100001", "275046912345678", "MARTIN", "JEANNE", "19750412", "F", "900001", birth="DURAND"),
     pv1("I", "PNEUMO", DR1, "900001", "20261122081500", "20261123110000"),
     zbe("MVT0005", "20261123110000", "INSERT", "4020")],
}
for name, segs in msgs.items():
    with open(name, "w", newline="\n") as f:
        f.write("\n".join(segs) + "\n")
# one in ISO 8859-1 with accents, the way many French senders still send
latin = [msh("A31", "ADT_A05", "SYN0007", "20261122100000", charset="8859/1"), evn("A31", "20261122100000"),
         pid("100003", "186087512345699", "LEFÈVRE", "HÉLÈNE", "19860821", "F", "", birth="GÉRARD").replace("LEFÈVRE^HÉLÈNE^HÉLÈNE", "GÉRARD^HÉLÈNE^HÉLÈNE ANAÏS"),
         seg("PV1", {1: "1", 2: "N"})]
with open("07-a31-update-latin1.hl7", "wb") as f:
    f.write(("\n".join(latin) + "\n").encode("latin-1"))
