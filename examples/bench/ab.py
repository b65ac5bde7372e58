#!/usr/bin/env python3
"""Interleaved A/B of two builds of the benchmark driver, for before/after tables.

    python3 examples/bench/ab.py BIN_A BIN_B ROUNDS ID[:N] ...

Each round runs every id once with each binary (the order of the two alternating per round),
each a fresh process. Prints per id: median items/s of A and of B, the median of the per-round
ratios B/A, the median `cpu_s_per_item` of each (in microseconds; a binary without the field
prints nan), and for W2/W3 each run's share of the ideal (concurrency / sleep latency).
Run from the repository root (W6 reads bench-data/jpeg relative to it).
"""
import json, subprocess, sys, statistics
a, b, rounds, ids = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
res = {}
for r in range(rounds):
    for spec in ids:
        id_, _, n = spec.partition(':')
        order = [('A', a), ('B', b)] if r % 2 == 0 else [('B', b), ('A', a)]
        for side, binary in order:
            cmd = [binary, '--id', id_] + (['--n', n] if n else [])
            out = subprocess.run(cmd, capture_output=True, text=True, cwd='.')
            if out.returncode != 0:
                print('FAIL', side, spec, out.stderr.strip()[:300]); continue
            j = json.loads(out.stdout.strip().splitlines()[-1])
            res.setdefault((spec, side), []).append(j)
def med(xs): return statistics.median(xs) if xs else float('nan')
print(f"{'id':28} {'A items/s':>12} {'B items/s':>12} {'B/A':>6} {'A cpu us':>9} {'B cpu us':>9}  ideal A/B")
for spec in ids:
    A, B = res.get((spec, 'A'), []), res.get((spec, 'B'), [])
    ra = [x['items_per_sec'] for x in A]; rb = [x['items_per_sec'] for x in B]
    ratios = [y / x for x, y in zip(ra, rb)]
    ca = [x.get('cpu_s_per_item') for x in A if x.get('cpu_s_per_item') is not None]
    cb = [x.get('cpu_s_per_item') for x in B if x.get('cpu_s_per_item') is not None]
    ideal = ''
    if spec.startswith(('W2.', 'W3.')):
        c = int(spec.split('.c')[1].split(':')[0])
        sa = [x['items_per_sec'] * x['sleep_latency_s'] / c for x in A]
        sb = [x['items_per_sec'] * x['sleep_latency_s'] / c for x in B]
        ideal = ' '.join(f"{v:.0%}" for v in sa) + ' | ' + ' '.join(f"{v:.0%}" for v in sb)
    print(f"{spec:28} {med(ra):12.0f} {med(rb):12.0f} {med(ratios):6.2f} {med(ca)*1e6:9.2f} {med(cb)*1e6:9.2f}  {ideal}")
