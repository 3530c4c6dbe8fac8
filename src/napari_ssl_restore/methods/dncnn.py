"""Apply a pretrained denoiser frame by frame: the shipped noise-aware one, or any model saved here.

The shipped model (``"unet-noise-aware-gray-v3"``) is a residual U-Net (32 features, 4 levels) that
predicts the noise, as DnCNN does (Zhang et al., IEEE TIP 2017), and reads the noise standard
deviation at each pixel beside the image, as FFDNet does (Zhang, Zuo & Zhang, IEEE TIP 27(9),
2018). It was trained on this project's CPU by ``scripts/train_denoiser.py`` on scikit-image's
bundled photographs, other packages' sample images and synthetic fluorescence fields, half with
white Gaussian noise (σ in [0, 55]/255), half with Poisson-Gaussian noise, then fine-tuned with
dead-leaves images added (sharp edges), then with each patch's squared error weighed relative to its
noise variance, so the low-noise end trains as much as the noisy one (the earlier defaults,
``"unet-noise-aware-gray-v2"`` and ``"unet-noise-aware-gray"``, stay shipped by name). ``noise``
says how its
map is made: ``"auto"`` fits signal-dependent noise ``a·u + b`` on the image (the restore
assistant's fit), ``"gaussian"`` one level everywhere. It is the fast baseline of the video
methods and their starting point (Frame2Frame, Restore-from-Restored). Weights ship in the package
and are checked against their sha256 before use. ``model=`` applies a saved model instead (a
Noise2Noise U-Net, or a model fine-tuned by ``frame2frame``/``restore-from-restored`` with
``save_model=``), or another shipped model by name: ``"dncnn-blind-gray"`` is the first release's
blind DnCNN (Gaussian noise only), kept for reproducibility. Measured against BM3D given the true
noise (docs/benchmarks/dncnn.md): above it on held-out synthetic microscopy fields and a retina
crop (+0.03 dB at worst), above it on photographs at σ 25/50 and 20/100 photons and 0.03 dB under
it at σ 15, and well under it on piecewise-constant images with pixel-sharp edges (a phantom,
binary silhouettes, a checkerboard: 0.8–6.4 dB), which a microscope's PSF does not produce; use
``classic-denoise`` ``algorithm="bm3d"`` for those.

On a time-lapse, ``fusion_radius`` > 0 fuses each denoised frame with its flow-warped denoised
neighbours (:class:`~napari_ssl_restore.engine.fusion.Fusion`, as the video methods do): frames are
then no longer independent, so a batch run does not split the movie.

Images are percentile-normalised (0.1–99.9 % to 0–1) before denoising, which matches the training
range; spatially correlated noise (some cameras, resampled data) is outside what the model saw:
fine-tune it on the data with ``frame2frame`` or ``restore-from-restored``.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from ..core.params import param
from ..core.registry import MethodResult, MethodSpec, Output, RunContext
from ..engine.planes import Outputs, Planes
from ..engine.video import NOISE_CHOICES, NOISE_DOC, TILE_DOC
from ._public import public_function


@dataclasses.dataclass(frozen=True)
class Params:
    """Pretrained-denoiser settings."""

    method_title = "DnCNN"

    model: str = param("", "Model to apply: empty for the shipped noise-aware denoiser, a shipped "
                           "model's name (unet-noise-aware-gray-v2: the previous default; "
                           "dncnn-blind-gray: the first release's blind DnCNN), or a .pt "
                           "saved by this plugin (Noise2Noise, Frame2Frame, "
                           "Restore-from-Restored).", widget="open_file")
    noise: Literal["auto", "gaussian"] = param("auto", NOISE_DOC, choices=NOISE_CHOICES,
                                               advanced=True)
    tile_size: int = param(0, TILE_DOC, min=0, max=8192, advanced=True)
    tile_overlap: int = param(32, "Overlap of prediction tiles, blended smoothly.", min=0,
                              max=1024, advanced=True)
    ensemble: bool = param(False, "Average the model's output over the 8 rotations/flips of each "
                                  "frame (self-ensemble): +0.14-0.16 dB in the benchmark, 8 "
                                  "network passes per frame.")
    fusion_radius: int = param(
        0, "Time-lapse: average each denoised frame with the denoised frames up to this many "
           "before and after it, warped onto it by the optical flow between them (pixels the flow "
           "does not explain are left out; as in frame2frame). 0: off, frame by frame.",
        min=0, max=10)

    def __post_init__(self):
        if self.tile_size and self.tile_overlap >= self.tile_size:
            raise ValueError("DnCNN: tile_overlap must be smaller than tile_size.")


def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs):
    """Denoise every plane (Z, T) with the pretrained model, in batches on the device."""
    from ..engine.fusion import Fusion
    from ..engine.predict import Predictor, predict_planes
    from ..engine.video import load_denoiser, write_ready

    if params.fusion_radius and planes.n_frames < 2 and len(planes) > 1:
        raise ValueError(f"DnCNN: fusion_radius averages neighbouring frames along T, but this "
                         f"stack (axes {planes.axes}) has {planes.n_frames} frame. For a "
                         "time-lapse set axes to TYX (or TZYX); else set fusion_radius to 0.")
    device = ctx.torch_device
    den, ckpt, noise = load_denoiser(params.model, planes, device, params.noise)
    predictor = Predictor(den, device, tile=params.tile_size, overlap=params.tile_overlap,
                          ensemble=params.ensemble)
    fusion = Fusion(planes, device, params.fusion_radius)
    yield from predict_planes(predictor, lambda i: planes[i], range(len(planes)),
                              lambda i, plane: write_ready(out, fusion.push(i, plane)),
                              label="denoising")
    write_ready(out, fusion.flush())
    prov = ckpt.get("provenance", {})
    info = {"device": str(device), "model": params.model or prov.get("shipped", ""),
            "model_sha256": prov.get("sha256", ""), "architecture": ckpt["architecture"],
            "tile": predictor.tile, **noise, **fusion.report()}
    return MethodResult({}, info)


def _demo() -> list[dict]:
    from ..data import noisy_video

    s = noisy_video(n_frames=6, size=128, sigma=25 / 255)
    return [{**s, "params": {}}]


SPEC = MethodSpec(
    name="dncnn",
    title="Pretrained denoiser (noise-aware residual U-Net), frame by frame",
    task="denoise",
    params=Params,
    run=run,
    function="denoise_dncnn",
    outputs=(Output("image", "The denoised image, same shape, axes and dtype as the input."),),
    scaling="percentile",
    uses_torch=True,
    demo=_demo,
    linked_planes=lambda p: ("temporal fusion averages each frame with its neighbours "
                             "(fusion_radius=0 restores frame by frame)"
                             if p.fusion_radius else ""),
)

denoise_dncnn = public_function(
    SPEC,
    summary="Denoise every frame/plane with the shipped pretrained denoiser (or a saved model).",
    notes="""
    The network predicts the noise and subtracts it (residual learning), reading a map of the
    noise level measured on the image (``noise``). The shipped weights were trained for white
    Gaussian noise with :math:`\\sigma \\in [0, 55]/255` of the percentile-normalised range and
    for Poisson-Gaussian (photon) noise; for other noise, fine-tune with
    :func:`denoise_frame2frame` or :func:`denoise_restore_from_restored`. No training happens here,
    so it takes seconds.
    """,
    references="""
    .. [1] K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang. Beyond a Gaussian Denoiser: Residual
           Learning of Deep CNN for Image Denoising. IEEE TIP 26(7), 2017.
    .. [2] K. Zhang, W. Zuo, L. Zhang. FFDNet: Toward a Fast and Flexible Solution for CNN-Based
           Image Denoising. IEEE TIP 27(9), 2018.
    """,
    examples="""
    >>> import numpy as np
    >>> from napari_ssl_restore import denoise_dncnn
    >>> rng = np.random.default_rng(0)
    >>> noisy = (0.5 + 0.1 * rng.standard_normal((3, 32, 32))).astype(np.float32)
    >>> denoise_dncnn(noisy, axes="TYX").shape
    (3, 32, 32)
    """,
)
