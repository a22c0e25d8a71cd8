"""Test doubles shared by the whole suite (one scripted chat model; no per-test fakes)."""
