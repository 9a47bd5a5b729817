print("albef-coord: not yet")
