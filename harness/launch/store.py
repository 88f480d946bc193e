"""The rendezvous TCPStore of a single-node launch, listening on one address only.

``TCPStore(host, port, is_master=True)`` ignores ``host`` for its server: it listens on every
interface, and the store has no authentication. Here the listening socket is created and bound
first, on ``LaunchSpec.master_addr`` (loopback, 127.0.0.1, by default) at a port the OS picks (port
0: no fixed ports, so many launches run at once), and handed to the store with ``master_listen_fd``
(honoured by the libuv backend, torch's default). The store owns the socket from then on and closes
it when it is destroyed. Ranks get as ``MASTER_ADDR`` the numeric address the socket is bound to, so
they connect exactly where the store listens.

The fork server keeps one store host process (``serve_stores``) that makes a fresh store for each
launch, ready before it is asked for: a launch then costs no fork and no store start-up (about 40 ms
at load 5 on 2 cores, 130 ms at load 12, against 3 ms to make a store in a warm process;
bench/trial_speed.py's empty launches).
"""

from __future__ import annotations

import os
import socket

LISTEN_BACKLOG = 512


def listen_socket(addr: str) -> socket.socket:
    """A TCP socket bound to ``addr`` (first address it resolves to) at a port the OS picks, listening."""
    family, _, proto, _, sockaddr = socket.getaddrinfo(addr, 0, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.bind(sockaddr)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def host_store(addr: str):
    """A rendezvous TCPStore server listening on ``addr`` only, on a port the OS picked: (store, host,
    port), where ``host`` is the numeric address to give ranks as MASTER_ADDR. Imports torch."""
    from torch.distributed import TCPStore

    sock = listen_socket(addr)
    host, port = sock.getsockname()[:2]
    try:
        store = TCPStore(host, port, is_master=True, wait_for_workers=False, master_listen_fd=sock.fileno(),
                         use_libuv=True)
    except BaseException:
        sock.close()
        raise
    sock.detach()  # the store closes the listening fd when it is destroyed
    return store, host, port


def serve_stores(requests_fd: int, replies_fd: int) -> None:
    """The fork server's store host: one fresh rendezvous store per launch, from one long-lived process.

    Reads lines ``ADDR`` from ``requests_fd`` and answers each with ``PORT HOST`` on ``replies_fd``: a
    store that nothing has used, listening on ADDR only (``error MESSAGE`` when it cannot listen there).
    Each launch gets its own store, as with one process per launch (no key of an earlier launch, a
    killed one included, can be read by a later one), without a fork per launch: the answer is a store
    made while the previous launch ran (the spare, for the address asked last), and the previous
    launch's store is destroyed then, when its ranks are gone (the fork server asks only between
    launches). Returns at end of input.
    """
    current = None
    spare: tuple | None = None  # (addr, (store, host, port))
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = os.read(requests_fd, 4096)
            if not chunk:
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        addr = line.decode().strip()
        current = None  # the previous launch's store goes: its ranks are reaped
        if spare is not None and spare[0] == addr:
            current, spare = spare[1], None
        else:
            spare = None
            try:
                current = host_store(addr)
            except Exception as e:  # a bad address: said to the fork server, which fails that launch
                os.write(replies_fd, f"error {type(e).__name__}: {e}".replace("\n", " ").encode() + b"\n")
                continue
        os.write(replies_fd, f"{current[2]} {current[1]}\n".encode())
        spare = (addr, host_store(addr))  # for the next launch, while this one runs
