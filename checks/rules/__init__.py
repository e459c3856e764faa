"""Pure judgements, no I/O: TLS certificates, DNSSEC chains, SPF, DMARC, DKIM,
MTA-STS, TLS-RPT, DANE, DNSBL answers, client configuration documents and
signed profiles. A rule that needs DNS takes a small lookup interface
(`spf.SPFLookup`, `dnssec.SignedLookup`); the stage hands it the door."""
