// Control target.
