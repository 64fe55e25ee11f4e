"""Specs: pure data describing an experiment (what to intervene on, how, what to measure, what is claimed)."""
