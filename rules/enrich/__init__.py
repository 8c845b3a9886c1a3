"""Enrichers turn raw submission input into facts: cheap, offline, data loaded once at start-up."""
