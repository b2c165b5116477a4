"""The chat core: the wire vocabulary of the /chat WebSocket (`wire`), and, around it, the
sessions, the commands and the delivery hub."""
