"""Execution providers: the models an agent runs on."""
