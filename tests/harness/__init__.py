"""Test-only harness: fault injectors and hooks that must not ship in the wheel."""
