"""The logic: accounts, contacts, groups, uploads, messages and the hub. Services own the rules
and the transactions, and publish to the hub only after commit."""
