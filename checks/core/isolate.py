"""CPU-heavy work in a child process: off the event loop, outside the GIL,
and ended at a deadline.

A thread is not enough for work whose cost a stranger chooses: one C call
that keeps the GIL (a regular expression over a message body) stalls the
event loop however the thread is scheduled, and a thread cannot be stopped.
A child process can: `run()` kills it at the deadline, or when the awaiting
task is cancelled (the check's own deadline), and the child caps its own CPU
time (RLIMIT_CPU), so it ends by itself even if its parent died first.

The child is a fresh interpreter (`python -c`), not a fork and not
multiprocessing: forking the worker would copy its threads' locks and its
Redis and Slack sockets, and multiprocessing's other start methods import
the parent's main script again in every child. It costs one interpreter
start (some 0.1 s), fine for work done once per message.

The arguments go to the child pickled; the answer comes back as JSON, so the
parent never unpickles anything from a process that handled hostile input.
`func` must therefore return plain data (lists, strings, numbers, None).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import pickle
import sys
from asyncio.subprocess import PIPE, Process
from collections.abc import Callable
from typing import Any

from checks.core.errors import MailcheckError

_STDERR = 500  # characters of a failed child's stderr kept for the message

# The child: read the request, cap CPU time (the kernel sends SIGXCPU past the
# soft limit and SIGKILL past the hard one) and core dumps, run, answer.
_CHILD = """\
import json, pickle, resource, sys
path, module, name, args, cpu = pickle.load(sys.stdin.buffer)
sys.path[:] = path
for which, soft in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_CPU, cpu)):
    hard = resource.getrlimit(which)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard if soft == hard else soft + 1))
import importlib
try:
    answer = {"ok": getattr(importlib.import_module(module), name)(*args)}
except Exception as exc:
    answer = {"error": f"{type(exc).__name__}: {exc}"}
sys.stdout.write(json.dumps(answer))
"""


# The child handles a stranger's bytes: it gets none of the parent's
# environment (Slack tokens, test-account passwords may be there).
_CHILD_ENV = {"LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


class Overrun(MailcheckError):
    """The work did not finish within its deadline; the child was killed.
    The message reads as what the work did: "did not finish within 20 s"."""


class ChildFailed(MailcheckError):
    """The child ended without an answer (it crashed, or hit its CPU limit),
    or its work raised: "failed: ..." saying which."""


async def run(
    func: Callable[..., Any], *args: Any, seconds: float, cpu_seconds: int | None = None
) -> Any:
    """`func(*args)` in a child process, its (JSON) result back, within
    `seconds` (start-up included). `func` must be a module-level function.
    Raises Overrun past the deadline, ChildFailed when the child gives no
    answer or `func` raises; cancelling the awaiting task kills the child too.
    The child's own CPU limit is `cpu_seconds`, by default a second past the
    deadline, rounded up."""
    cpu = cpu_seconds if cpu_seconds is not None else math.ceil(seconds) + 1
    request = pickle.dumps((list(sys.path), func.__module__, func.__qualname__, args, cpu))
    # Spawned shielded: a cancellation must not lose the handle to a child it
    # started, or nobody could kill it.
    spawning = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, stdin=PIPE, stdout=PIPE, stderr=PIPE, env=_CHILD_ENV
        )
    )
    child: Process | None = None
    try:
        async with asyncio.timeout(seconds):
            try:
                child = await asyncio.shield(spawning)
            except OSError as exc:
                raise ChildFailed(f"failed: no child process could start ({exc})") from exc
            out, err = await child.communicate(request)
    except TimeoutError:
        raise Overrun(f"did not finish within {seconds:g} s") from None
    finally:
        await _end(child, spawning)
    try:
        answer = json.loads(out)
    except ValueError:
        tail = err.decode(errors="replace").strip()[-_STDERR:]
        raise ChildFailed(
            f"failed: the child process ended without an answer (exit code "
            f"{child.returncode}{': ' + tail if tail else ''})"
        ) from None
    if "error" in answer:
        raise ChildFailed(f"failed: {answer['error']}")
    return answer["ok"]


async def _end(child: Process | None, spawning: asyncio.Future[Process]) -> None:
    """Kill the child if it still runs, and wait until it is gone."""
    if child is None:
        with contextlib.suppress(Exception):
            child = await asyncio.shield(spawning)
    if child is not None and child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await asyncio.shield(child.wait())
