"""The domain: protection-state rules (pure), the key layout, and the revision-consistent store."""
