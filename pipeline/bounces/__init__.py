"""Returns: what the mail system sends back. Takes bounce and complaint reports (the SMTP reply of
a refused send, DSNs and ARF reports in the bounce mailbox, ESP webhooks); gives Events for
`store.events`, which decides what they do to a subscriber."""
