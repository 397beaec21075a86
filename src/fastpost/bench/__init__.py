"""`fastpost bench`: start fastpost, drive load, and report against the SLO and a baseline.

The machinery here (servers pinned with taskset, wrk, the fixed-rate generator, scratch
databases) is shared with the scripts in benchmarks/.
"""
