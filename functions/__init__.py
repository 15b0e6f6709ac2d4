"""Thin trigger adapters: each blueprint turns a trigger's input into a call on a domain service in `shared/`."""
