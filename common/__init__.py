"""common package: the shared reference core (schedules, Tweedie, samplers, CFG, evaluation, GPU plumbing, toy world).

Importing it sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy (issue #19): libgomp, torch's CPU
thread pool, reads it once when torch loads, and its default busy-waiting made two threads up to 10x slower than
one on a busy 2-core laptop (a DPS step 3.8-14 s instead of 0.35-1.2 s; ``benchmarks/bench_cpu_toy.py``). Every
assignment package imports ``common`` first for this reason.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
