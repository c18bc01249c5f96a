"""cnibench: what does a container network cost, compared with no containerization?"""

__version__ = "0.1.0"
