"""The engine's one exception tree.

    MailcheckError
     ├── InputError                  the user's input is not something we can check
 ├── DocumentError               a published record or document readers would reject
     ├── TargetRefused               the target policy forbids an address
     ├── NetError                    a conversation with a server went wrong
     │    ├── ConnectRefused         nothing listens (RST)
     │    ├── ConnectTimeout         no answer to the SYN in time (also a TimeoutError)
     │    ├── ConnectFailed          any other socket error while connecting
     │    ├── ReadTimeout            the server went quiet mid-conversation (also a TimeoutError)
     │    ├── ConnectionClosed       the server hung up
     │    ├── ProtocolViolation      it said something that is not the protocol, or too much
     │    └── TLSFailed              the TLS handshake failed
     └── DNSError                    a lookup did not give an answer
                                     (a name with no record of the type asked is
                                     not an error: the answer is just empty)
          ├── NXDomain               the name does not exist (authoritative)
          └── ResolverFailure        no usable answer: SERVFAIL, REFUSED, garbage...
               └── ResolverTimeout   ...or no answer in time (also a TimeoutError)

Third-party exceptions (dnspython's, later the protocol libraries') are
translated into these in one place, the network door, always `from exc`.
Probes catch these and turn them into findings; anything else escaping a
probe is a bug, which the runner reports as `engine.probe.failed`.
"""

from __future__ import annotations

from collections.abc import Sequence


class MailcheckError(Exception):
    """Base of every error the engine raises on purpose."""


class InputError(MailcheckError, ValueError):
    """The input cannot be checked; the message says why, for a human."""


class DocumentError(MailcheckError, ValueError):
    """A published record or document (a policy, a client configuration) that
    its readers would reject: every problem found, so all can be fixed at once."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


class TargetRefused(MailcheckError):
    def __init__(self, address: str, reason: str) -> None:
        super().__init__(
            f"{address} is {reason}; refusing to connect (allow it with --allow-target)"
        )
        self.address = address
        self.reason = reason


class NetError(MailcheckError):
    pass


class ConnectRefused(NetError):
    pass


class ConnectTimeout(NetError, TimeoutError):
    pass


class ConnectFailed(NetError):
    pass


class ReadTimeout(NetError, TimeoutError):
    pass


class ConnectionClosed(NetError):
    pass


class ProtocolViolation(NetError):
    pass


class TLSFailed(NetError):
    pass


class DNSError(MailcheckError):
    def __init__(self, qname: str, rdtype: str, message: str) -> None:
        super().__init__(message)
        self.qname = qname
        self.rdtype = rdtype


class NXDomain(DNSError):
    pass


class ResolverFailure(DNSError):
    pass


class ResolverTimeout(ResolverFailure, TimeoutError):
    pass
