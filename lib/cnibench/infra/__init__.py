"""Stage 1, infrastructure: the hosts and how to reach them.

Inventory and paths (config), SSH hosts and the local runner (hosts, local), the local testbed,
kernel probes, Debian packages, the per-host session lease, the dependency lock and the one
builder of the project's C programs (cbuild).

May import: catalog, parsing, errors
"""
