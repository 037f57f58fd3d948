"""Studies: expand a sweep into trials, store their results, stop weak runs early."""
