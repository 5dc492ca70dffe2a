"""Lesson recipes and sweeps: how the lessons train, compare and sweep the models of the core
modules. Core modules never import this package; lessons and benchmarks do."""
