"""hashveil's retrieval: ``retrieval.core`` (the hashing core the client shares) and
``retrieval.service`` (what only the service provider runs)."""
