// ALBEF target.
