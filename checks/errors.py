"""The engine's one exception tree.

    MailcheckError
     ├── InputError                  the user's input is not something we can check
     ├── TargetRefused               the target policy forbids an address
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


class MailcheckError(Exception):
    """Base of every error the engine raises on purpose."""


class InputError(MailcheckError, ValueError):
    """The input cannot be checked; the message says why, for a human."""


class TargetRefused(MailcheckError):
    def __init__(self, address: str, reason: str) -> None:
        super().__init__(
            f"{address} is {reason}; refusing to connect (allow it with --allow-target)"
        )
        self.address = address
        self.reason = reason


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
