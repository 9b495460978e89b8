"""liveroom's domain: rooms, access, events, the wire codec and the Redis-backed room bus.

Nothing in this package opens a listening socket; the servers in ``gateway/`` and ``media/``
call into it.
"""
