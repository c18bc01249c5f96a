"""The mode kinds, one module each (registered in modes/registry.py). A kind plans with the
engine's pieces and path checks; kinds never import each other, shared code lives in the engine.

Part of cnibench.modes (see its docstring for what the stage may import).
"""
