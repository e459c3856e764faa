"""The one door to the network: DNS (`door.Network`'s own stub resolution),
TCP and TLS conversations (`conn`), HTTP over the door's sockets (`http`), and
the per-check budgets spent there (`budget`). Every connection passes the
target policy, the per-address lock and the transcript here, and third-party
errors become the engine's own (checks.core.errors) here, once."""
