"""`fastpost lab`: each performance anti-pattern beside its fix, measured in the same run.

Every experiment runs real fastpost code (models, services, the app, its cache) against a
database the lab migrates and seeds itself, counts the SQL statements it sends and times
it; the sizes come from the command line. See `fastpost lab --help`.
"""
