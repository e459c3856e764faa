"""The engine's one exception tree.

    MailcheckError
     ├── InputError                  the user's input is not something we can check
 ├── DocumentError               a published record or document readers would reject
     ├── TargetRefused               the target policy forbids an address
     │    └── ConnectBudgetExceeded  ...or the check's connection budget is spent
     │                               (also a NetError and a BudgetExceeded)
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
               ├── ResolverTimeout   ...or no answer in time (also a TimeoutError)
               └── QueryBudgetExceeded  ...or not asked: the check's query budget
                                     is spent (also a BudgetExceeded)
     BudgetExceeded                  a per-check budget is spent (checks.net.budget); the
                                     network door raises the two above, which every
                                     probe already handles as a refusal or a failed lookup

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
        self.url: str | None = None  # the URL whose host it is, for an HTTP fetch


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


class TLSDropped(TLSFailed):
    """The server hung up in the middle of the handshake, without an alert:
    what a busy server does (a full login queue), and a broken one too."""


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


class BudgetExceeded(MailcheckError):
    """A per-check budget (checks.core.config.Budgets) is spent: the work was not
    done. The check reports each budget once (`engine.budget.exceeded`), so a
    probe need not add a finding of its own for what it could not do."""

    def __init__(self, budget: str, message: str) -> None:
        # Not super(): in the subclasses below it would be TargetRefused's or
        # DNSError's __init__, which take other arguments.
        Exception.__init__(self, message)
        self.budget = budget


class ConnectBudgetExceeded(BudgetExceeded, TargetRefused, NetError):
    """Not connected: the check's connection budget is spent. A TargetRefused
    and a NetError, so code that handles either handles this."""

    def __init__(self, budget: str, address: str, message: str) -> None:
        BudgetExceeded.__init__(self, budget, message)
        self.address = address
        self.reason = message


class QueryBudgetExceeded(BudgetExceeded, ResolverFailure):
    """Not asked: the check's (or the SPF diagnosis') query budget is spent."""

    def __init__(self, budget: str, qname: str, rdtype: str, message: str) -> None:
        BudgetExceeded.__init__(self, budget, message)
        self.qname = qname
        self.rdtype = rdtype
