#!/usr/bin/env bash
# An integrator's walk through the document endpoints with curl, as in the README
# ("Documents"): find the patient by IPP, find its encounter, send a PDF, poll the tracking
# until every destination says `completed` (or `entered-in-error`).
#
#   FHIR_TOKEN=… tests/peers/documents_walkthrough.sh http://127.0.0.1:8717 letter.pdf [IPP]
#
# JSON is read with python3 (no jq needed). Exit 0 when the document was integrated.
set -euo pipefail
base=$1
pdf=$2
ipp=${3:-100001}
auth=(-H "Authorization: Bearer ${FHIR_TOKEN:?set FHIR_TOKEN to the [fhir] token}")
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# 1. the patient, by IPP
patient=$(curl -sf "${auth[@]}" "$base/fhir/Patient?identifier=urn:ordobridge:ipp%7C$ipp" \
  | json 'd["entry"][0]["resource"]["id"] if d["total"] == 1 else sys.exit("no such patient")')
echo "patient: Patient/$patient"

# 2. its encounters (the first one, the latest)
encounter=$(curl -sf "${auth[@]}" "$base/fhir/Encounter?patient=$patient" \
  | json 'd["entry"][0]["resource"]["id"]')
echo "encounter: Encounter/$encounter"

# 3. send the PDF as FHIR Parameters
body=$(mktemp)
trap 'rm -f "$body"' EXIT
printf '{"resourceType":"Parameters","parameter":[
  {"name":"subject","valueReference":{"reference":"Patient/%s"}},
  {"name":"context","valueReference":{"reference":"Encounter/%s"}},
  {"name":"content-type","valueCode":"application/pdf"},
  {"name":"document-type","valueCoding":{"system":"http://loinc.org","code":"11488-4"}},
  {"name":"document-title","valueString":"Courrier de consultation"},
  {"name":"payload","valueBase64Binary":"%s"}]}' \
  "$patient" "$encounter" "$(base64 -w0 "$pdf")" > "$body"
answer=$(curl -sf "${auth[@]}" -H 'Content-Type: application/fhir+json' \
  --data-binary "@$body" "$base/fhir/CommunicationRequest/\$send-to-ehr")
tracking=$(echo "$answer" | json '[p["valueUrl"] for p in d["parameter"] if p["name"] == "tracking-url"][0]')
echo "tracking: $tracking"

# 4. poll the tracking until it is final
for _ in $(seq 200); do
  statuses=$(curl -sf "${auth[@]}" "$tracking" | json '" ".join(e["resource"]["status"] for e in d["entry"])')
  case " $statuses " in
    *" preparation "*|*" in-progress "*) sleep 0.1 ;;
    *) echo "status: $statuses"; exit 0 ;;
  esac
done
echo "still not integrated: $statuses" >&2
exit 1
