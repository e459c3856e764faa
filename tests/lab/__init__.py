"""Local test lab: real servers on 127.1.0.0/16 for integration tests."""
