"""A tiny DNS server on 127.0.0.1 for tests and benchmarks: answers from a table, counts the questions.

    with DnsStandIn({"registry.test": (["203.0.113.7"], 60)}) as dns_server:
        dns_server.write_resolv_conf(path)        # "nameserver 127.0.0.1"
        lookup = SystemLookup(resolv_conf=path, hosts_file=..., port=dns_server.port)

``records`` maps a name to (addresses, TTL); it may be changed while the
server runs. A name not in it gets NXDOMAIN; a name without an address of
the family asked gets an empty answer (NOERROR, no data). ``queries`` holds
every question received, as (name, type), in order.

``drop_parallel`` makes it a resolver that loses parallel queries on
purpose: each answer takes ``busy`` seconds, and a question that arrives
while another is being answered is dropped, so the client only gets an
answer when it retries after its time-out.
"""

from __future__ import annotations

import heapq
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DnsStandIn:
    def __init__(self, records: Mapping[str, tuple[Sequence[str], int]] | None = None, *,
                 busy: float = 0.0, drop_parallel: bool = False) -> None:
        self.records: dict[str, tuple[Sequence[str], int]] = dict(records or {})
        self.busy = busy
        self.drop_parallel = drop_parallel
        self.queries: list[tuple[str, str]] = []
        self.dropped = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dns-standin", daemon=True)

    def __enter__(self) -> DnsStandIn:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def write_resolv_conf(self, path: Path, search: Sequence[str] = ()) -> Path:
        text = "nameserver 127.0.0.1\n" + (f"search {' '.join(search)}\n" if search else "")
        path.write_text(text)
        return path

    def asked(self, name: str) -> list[str]:
        """The types of the questions asked about ``name``, in order."""
        return [rdtype for qname, rdtype in self.queries if qname == name]

    def _answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        if not query.question:
            return None
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        response = dns.message.make_response(query)
        record = self.records.get(name)
        if record is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()
        addresses, ttl = record
        family = ":" if rdtype == "AAAA" else "."
        wanted = [a for a in addresses if family in a] if rdtype in ("A", "AAAA") else []
        if wanted:
            response.answer.append(dns.rrset.from_text(question.name, ttl, "IN", rdtype, *wanted))
        return response.to_wire()

    def _serve(self) -> None:
        due: list[tuple[float, int, bytes, tuple[str, int]]] = []
        busy_until = 0.0
        seq = 0
        while not self._stop.is_set():
            wait = 0.05 if not due else min(0.05, max(0.0005, due[0][0] - time.monotonic()))
            self._sock.settimeout(wait)
            try:
                wire, peer = self._sock.recvfrom(65535)
            except (TimeoutError, OSError):
                wire = b""
            now = time.monotonic()
            if wire:
                reply = self._answer(wire)
                if reply is not None:
                    if self.drop_parallel and now < busy_until:
                        self.dropped += 1
                    else:
                        busy_until = now + self.busy
                        seq += 1
                        heapq.heappush(due, (now + self.busy, seq, reply, peer))
            while due and due[0][0] <= time.monotonic():
                _, _, reply, peer = heapq.heappop(due)
                try:
                    self._sock.sendto(reply, peer)
                except OSError:
                    pass
