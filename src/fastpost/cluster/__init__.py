"""Local topologies on real engines: `fastpost cluster`."""
