"""Operations: structured logs and the Prometheus metric sets."""
