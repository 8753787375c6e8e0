"""The service's side of the service<->connector contract (connector/openapi.yaml): the
signature both directions carry, the basic event on the wire, and the signed client of the
connector."""
