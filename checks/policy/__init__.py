"""The policy stage's rules: SPF, DMARC, DKIM, MTA-STS, TLS-RPT, DANE, DNSBL.

Each module holds pure parsers and evaluators (DNS, where needed, comes in
through a small lookup seam); the probes that drive them live elsewhere.
"""
