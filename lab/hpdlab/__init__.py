"""The lab's library; lab/labctl is its command line (see lab/labctl.py).

    util.py      paths, locks, processes, waits, the error type
    spec.py      lab specs (hosts, addresses, sizes)
    base.py      the base rootfs, the archive cache, the wheelhouse (one build lock)
    cgroups.py   a cgroup (or a systemd scope) per host, with its limits
    master.py    the lab's salt-master, its keys and the Salt clients
    hosts.py     preparing, booting and entering the hosts, the machine's limits
    lab.py       a lab's state, `up` and `down`
    cli.py       the command line
"""
