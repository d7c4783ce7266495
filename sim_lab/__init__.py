"""A simulated solid-state lab: a hidden world behind the same driver protocol as real instruments."""
