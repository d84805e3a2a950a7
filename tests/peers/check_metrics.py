"""Reads an OpenMetrics text exposition on stdin with prometheus_client's strict parser and
prints one line per family: `NAME TYPE SAMPLES`. Exits 1 with the parser's message if the text
is not valid OpenMetrics."""
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as error:  # the parser raises ValueError and others
        print(f"invalid OpenMetrics: {error}", file=sys.stderr)
        return 1
    for family in families:
        print(f"{family.name} {family.type} {len(family.samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
