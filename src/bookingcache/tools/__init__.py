"""Tools beside the service: ``bookingcache demo``, ``bookingcache bench`` and the child-process
helper they share with the tests. No service module imports them."""
