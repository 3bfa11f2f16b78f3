"""The controller: reconcile loops around the pure policy, one leader at a time."""
