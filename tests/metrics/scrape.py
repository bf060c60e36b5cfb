"""Scrapes a Strata /metrics endpoint and checks the exposition with PyPI prometheus-client's
two parsers (the Prometheus text format and the stricter OpenMetrics one). Prints every sample
as JSON: {"name{label=value,...}": value}, labels sorted. Exits non-zero if either parser
refuses the text."""
import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus

url = sys.argv[1]
with urllib.request.urlopen(url, timeout=10) as r:
    ctype = r.headers.get("Content-Type", "")
    text = r.read().decode()
assert ctype.startswith("application/openmetrics-text"), ctype
samples = {}
for fam in prometheus(text):
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
strict = sum(len(f.samples) for f in openmetrics(text))
assert strict == len(samples), (strict, len(samples))
json.dump(samples, sys.stdout)
