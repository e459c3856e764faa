"""The mail protocols, spoken over the door's connections: SMTP (`smtp`),
IMAP and POP3 (`mailbox`), and what one conversation is and yields
(`session`). No judgement and no findings here: the stages decide what a
reply means for the domain."""
