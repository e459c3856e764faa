"""Running checks: the runner plans the probe graph of the registered stages
(checks.stages) and streams events; `sendtest` runs the send test's submission
and judges the message it brings back. (Not `checks/run/`: that package would
shadow the public `checks.run`.)"""
