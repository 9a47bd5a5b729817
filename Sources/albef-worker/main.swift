print("albef-worker: not yet")
