"""The legacy service: the technical-layer architecture (api/, models/, services/)."""
