"""SpiKernel engine: kernel-size exploration for spiking neural networks.

Layers, each importing only from those listed before it: ``core`` (torch-free: spaces, profiles,
footprint, Alg. 1, energy, seeds, files, errors), ``data``, ``nn``, ``search``, ``train``, ``deploy``,
``study``, ``store``, ``jobs``, ``api`` and ``cli``. ``import engine`` loads none of them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spikernel-studio")
except PackageNotFoundError:  # a checkout used without ``pip install -e .`` (Ray tasks set PYTHONPATH)
    __version__ = "0+unknown"

__all__ = ["__version__"]
