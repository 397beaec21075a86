"""The fault suite: fastpost under load while its dependencies fail, on real processes.

Each scenario runs against a PostgreSQL cluster and a Redis of the suite's own (never the
machine's shared ones), fastpost served with 2 workers, and a load generator in the test's
process; it prints one row: scenario, requests, failures by status, p99, recovery time,
writes acknowledged against writes stored.

    .venv/bin/pytest tests/faults -s       # the short version, as CI runs it
    make faults                            # the long one (python -m tests.faults --help)
"""
