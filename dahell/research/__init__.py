"""The read side: sales estimates, same-item groups and the ranking queries (issue 13)."""
