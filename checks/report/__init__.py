"""What becomes of a finished Report: its JSON form (the documented machine
interface) and what changed between two reports of a domain."""
