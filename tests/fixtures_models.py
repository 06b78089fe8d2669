"""Tiny model fixtures (built offline once per machine, loaded with from_pretrained)."""
