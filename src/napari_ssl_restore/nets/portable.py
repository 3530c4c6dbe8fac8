"""A saved network as other software runs it: what the plugin wraps around the network at
prediction time, in one module that needs only torch and numpy.

The plugin feeds a noise-aware denoiser (``config["noise_map"]``, after FFDNet: Zhang, Zuo & Zhang,
IEEE TIP 2018) the noise standard deviation at each pixel beside the image, from the noise model
``a·u + b`` it measures on each image (:func:`napari_ssl_restore.physics.noise.noise_std_map`).
Software that knows nothing of that model passes the image alone: a :class:`PortableNet` carries
one measured model and builds the map itself. Other networks pass through unchanged.

:mod:`napari_ssl_restore.export` writes this module, the network's own module and the noise map's
function into the single source file of a bioimage.io model zip (its ``pytorch_state_dict``
architecture); the relative imports below are the lines it leaves out there.
"""
from __future__ import annotations

import torch
from torch import nn

from ..physics.noise import noise_std_map
from .dncnn import DnCNN  # noqa: F401 - networks are found by class name (``network``)
from .gan import ContentDeblurrer, ResnetGenerator  # noqa: F401
from .unet import UNet  # noqa: F401


class PortableNet(nn.Module):
    """The network ``network(**config)`` (a class of :mod:`napari_ssl_restore.nets` by name, e.g.
    ``"UNet"``) as its ``net``; with ``noise = [a, b]`` it is fed the noise-level map of the variance
    model ``a·u + b`` (in the units the network sees) as one more input channel.

    Parameters
    ----------
    network : str
        Class name of the network.
    config : dict
        Its constructor's keyword arguments (a checkpoint's ``config``).
    noise : [float, float], optional
        ``(a, b)`` for a noise-aware network: the map is built from each input (smoothed by
        ``smooth`` pixels) and concatenated after the image's channels.
    smooth : float
        Gaussian smoothing of the input standing for the clean signal in the map.
    """

    def __init__(self, network: str, config: dict, noise: list[float] | None = None,
                 smooth: float = 2.0):
        super().__init__()
        cls = globals().get(network)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"unknown network {network!r}; expected a class of "
                             "napari_ssl_restore.nets such as 'UNet' or 'DnCNN'.")
        self.net = cls(**config)
        self.noise = None if noise is None else (float(noise[0]), float(noise[1]))
        self.smooth = float(smooth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise is not None:
            x = torch.cat([x, noise_std_map(x, self.noise[0], self.noise[1], self.smooth)], 1)
        return self.net(x)
