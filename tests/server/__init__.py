"""Tests of the reference server, `harness serve` (issue 3)."""
