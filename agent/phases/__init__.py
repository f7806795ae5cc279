"""One module per boot phase; each imports only what its phase needs."""
