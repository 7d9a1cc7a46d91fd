"""The attacker's side: what a server that keeps its query log (uploads included) learns."""
