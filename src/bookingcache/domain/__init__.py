"""The booking-cache domain: basic events and availability rules. No I/O lives here."""
