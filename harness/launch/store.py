"""The rendezvous TCPStore of a single-node launch, listening on one address only.

``TCPStore(host, port, is_master=True)`` ignores ``host`` for its server: it listens on every
interface, and the store has no authentication. Here the listening socket is created and bound
first, on ``LaunchSpec.master_addr`` (loopback, 127.0.0.1, by default) at a port the OS picks (port
0: no fixed ports, so many launches run at once), and handed to the store with ``master_listen_fd``
(honoured by the libuv backend, torch's default). The store owns the socket from then on and closes
it when it is destroyed. Ranks get as ``MASTER_ADDR`` the numeric address the socket is bound to, so
they connect exactly where the store listens.
"""

from __future__ import annotations

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
