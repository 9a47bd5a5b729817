// Distributed target.
