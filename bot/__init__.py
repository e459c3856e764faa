"""mailcheck's front ends: the terminal CLI now, the Slack bot and its workers later.

Nothing here diagnoses anything; it turns settings and user input into calls
to the `checks` engine and formats what comes back.
"""
