#!/usr/bin/python3
"""Parse claude_metrics() output (stdin) with the Prometheus client's text
parser and check what a scraper relies on; print the values as JSON."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
families = {f.name: f for f in text_string_to_metric_families(text)}
out = {}
problems = []

for name, kind in [('claude_requests', 'counter'), ('claude_retries', 'counter'),
                   ('claude_cache_hits', 'counter'), ('claude_cache_misses', 'counter'),
                   ('claude_tokens', 'counter'), ('claude_cost_usd', 'counter'),
                   ('claude_connections', 'gauge'), ('claude_in_flight', 'gauge'),
                   ('claude_queued', 'gauge'), ('claude_request_duration_seconds', 'histogram')]:
    f = families.get(name)
    if f is None:
        problems.append(f'missing {name}')
    elif f.type != kind:
        problems.append(f'{name} is a {f.type}, not a {kind}')

for f in families.values():
    for s in f.samples:
        key = s.name + ''.join(f'{{{k}={v}}}' for k, v in sorted(s.labels.items()))
        out[key] = s.value

h = families.get('claude_request_duration_seconds')
if h is not None:
    buckets = [(float(s.labels['le']), s.value) for s in h.samples if s.name.endswith('_bucket')]
    counts = [v for _, v in sorted(buckets)]
    if counts != sorted(counts):
        problems.append('histogram buckets are not cumulative')
    if not buckets or buckets[-1][0] != float('inf'):
        problems.append('no +Inf bucket')
    count = [s.value for s in h.samples if s.name.endswith('_count')]
    if not count or count[0] != max(counts):
        problems.append('_count differs from the +Inf bucket')

print(json.dumps({'problems': problems, 'values': out}))
