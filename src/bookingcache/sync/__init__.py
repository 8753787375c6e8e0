"""The sync engine: durable inbox, coalescing refresh jobs, the worker that runs them against a
tenant's event source, lifecycle handling and the reconciliation sweep."""
