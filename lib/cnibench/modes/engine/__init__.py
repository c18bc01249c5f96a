"""The mode engine: gathers host facts, applies a kind's plan with undo, verifies it, keeps the
state (driver copy and checked host copies) and the pieces and path checks the kinds share.

Part of cnibench.modes (see its docstring for what the stage may import).
"""
