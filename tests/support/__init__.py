"""Helpers shared by the tests: tiny real servers for behaviour no real server shows."""
