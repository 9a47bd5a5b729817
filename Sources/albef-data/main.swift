print("albef-data: not yet")
