"""RIFE v4.x frame interpolation (the Practical-RIFE 5-block IFNet family), written for this project in PyTorch.

The network estimates two flows (intermediate frame -> frame A, intermediate frame -> frame B) and a fusion
mask, coarse to fine: block k works on the inputs downscaled by 16, 8, 4, 2, 1 and refines the previous
block's flow. A small shared encoder gives every image 4 feature channels that are warped along with it.
The weights are the MIT-licensed `flownet.pkl` (see source.model_files.rife_weights_path); its `teacher.*`
tensors exist only for training and are dropped, as is the unused `caltime` head.

The same code runs on CPU and CUDA (fp16 on CUDA by default). Inputs are padded (edge-replicated) to a
multiple of 64 pixels, the coarsest working resolution, and cropped back afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from source.errors import InvalidInput
from source.warm import Warm

PAD_MULTIPLE = 64                      # coarsest block: /16 resize, then two stride-2 convolutions
SCALES = (16, 8, 4, 2, 1)              # per-block working scale (input is shrunk by this factor)
BLOCK_WIDTHS = (192, 128, 96, 64, 32)  # hidden channels of each block
FEAT_CH = 4                            # encoder feature channels per image
BLOCK_EXTRA_CH = 8                     # per-block feature channels handed to the next block


def _conv_lrelu(cin: int, cout: int, stride: int) -> nn.Sequential:
    # nested so that parameter names read `conv0.<i>.0.weight`, matching the published weights
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))


class _Encoder(nn.Module):
    """Per-image features at full resolution: down 2x, two 3x3 convs, transposed conv back up."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, 16, 3, 2, 1)
        self.cnn1 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(16, FEAT_CH, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.cnn0(x), 0.2)
        x = F.leaky_relu(self.cnn1(x), 0.2)
        x = F.leaky_relu(self.cnn2(x), 0.2)
        return self.cnn3(x)


class _ScaledResidual(nn.Module):
    """y = lrelu(conv(x) * beta + x) with a learned per-channel beta."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x) * self.beta + x, 0.2)


class _FlowBlock(nn.Module):
    """One coarse-to-fine stage: returns (flow delta [4ch], mask logit [1ch], features [8ch]) at full size."""

    OUT_CH = 4 + 1 + BLOCK_EXTRA_CH

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv_lrelu(cin, c // 2, 2), _conv_lrelu(c // 2, c, 2))
        self.convblock = nn.Sequential(*[_ScaledResidual(c) for _ in range(8)])
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * self.OUT_CH, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, parts: list[torch.Tensor], flow: torch.Tensor | None, scale: int):
        """parts: full-resolution inputs in channel order (see IFNet). Each is shrunk on its own before the
        concatenation (bilinear resizing is per channel, so this equals shrinking the concatenation, without
        writing a full-resolution copy of every input)."""
        if flow is not None:
            parts = [*parts, flow]
        if scale != 1:
            parts = [F.interpolate(p, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
                     for p in parts]
            if flow is not None:
                parts[-1] = parts[-1] / scale
        x = torch.cat(parts, 1)
        y = self.lastconv(self.convblock(self.conv0(x)))
        if scale != 1:
            y = F.interpolate(y, scale_factor=scale, mode="bilinear", align_corners=False)
        return y[:, :4] * scale, y[:, 4:5], y[:, 5:]


def _backward_warp(img: torch.Tensor, flow: torch.Tensor, grid_cache: dict) -> torch.Tensor:
    """Sample img at (x + flow_x, y + flow_y) (pixels), border-clamped, bilinear."""
    n, _, h, w = flow.shape
    key = (h, w, flow.device, flow.dtype)
    base = grid_cache.get(key)
    if base is None:
        ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        base = torch.stack((gx, gy), dim=-1).unsqueeze(0)  # 1,H,W,2
        if len(grid_cache) >= 8:  # one entry per working size; keep the cache small
            grid_cache.clear()
        grid_cache[key] = base
    norm = torch.tensor([(w - 1.0) / 2.0, (h - 1.0) / 2.0], device=flow.device, dtype=flow.dtype)
    grid = base + flow.permute(0, 2, 3, 1) / norm
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        first_in = 3 + 3 + FEAT_CH * 2 + 1                        # A, B, their features, t
        later_in = 3 + 3 + FEAT_CH * 2 + 1 + 1 + BLOCK_EXTRA_CH + 4  # warped A/B/features, t, mask, feat, flow
        for i, c in enumerate(BLOCK_WIDTHS):
            setattr(self, f"block{i}", _FlowBlock(first_in if i == 0 else later_in, c))
        self.encode = _Encoder()
        self._grids: dict = {}

    # Our input channel order keeps each image next to its features, so the warped pair is one tensor:
    #   block0:  [A, fA, B, fB, t]                  published order: [A, B, fA, fB, t]
    #   block1+: [wA, wfA, wB, wfB, t, mask, feat, flow]  published: [wA, wB, wfA, wfB, t, mask, feat, flow]
    # load_published() permutes the first convolution's input channels accordingly.
    _PERM_FIRST = [0, 1, 2, 6, 7, 8, 9, 3, 4, 5, 10, 11, 12, 13, 14]
    _PERM_LATER = _PERM_FIRST[:14] + list(range(14, 28))

    def load_published(self, state: dict[str, torch.Tensor]):
        """load_state_dict for weights in the published channel order; returns (missing, unexpected)."""
        state = dict(state)
        for i in range(len(BLOCK_WIDTHS)):
            key = f"block{i}.conv0.0.0.weight"
            if key in state:
                perm = self._PERM_FIRST if i == 0 else self._PERM_LATER
                if state[key].shape[1] == len(perm):
                    state[key] = state[key][:, perm].contiguous()
        return self.load_state_dict(state, strict=False)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: float) -> torch.Tensor:
        """img0/img1: N,3,H,W in [0,1] with H, W multiples of 64; returns the frame at time t."""
        n, _, h, w = img0.shape
        feats = self.encode(torch.cat((img0, img1), 0))  # both images in one batch
        # image + features of A and of B, stacked on the batch axis so that one warp call serves both
        src = torch.cat((torch.cat((img0, feats[:n]), 1), torch.cat((img1, feats[n:]), 1)), 0)  # 2N,7,H,W

        def pair(x: torch.Tensor) -> torch.Tensor:  # 2N,7,H,W -> N,14,H,W as [A-side, B-side]
            return x.view(2, n, 7, h, w).transpose(0, 1).reshape(n, 14, h, w)

        tmap = img0.new_full((n, 1, h, w), float(t))
        flow = mask = feat = None
        warped = None
        for i, scale in enumerate(SCALES):
            block = getattr(self, f"block{i}")
            if flow is None:
                flow, mask, feat = block([pair(src), tmap], None, scale)
            else:
                delta, mask, feat = block([pair(warped), tmap, mask, feat], flow, scale)
                flow = flow + delta
            warped = _backward_warp(src, torch.cat((flow[:, :2], flow[:, 2:4]), 0), self._grids)
        m = torch.sigmoid(mask)
        return warped[:n, :3] * m + warped[n:, :3] * (1 - m)


def load_ifnet_state(weights: Path) -> dict[str, torch.Tensor]:
    """The inference tensors of a RIFE v4.x flownet.pkl: `module.` prefixes stripped, training-only keys dropped."""
    try:
        raw = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle errors, truncated files, ...
        raise InvalidInput(f"RIFE weights {weights} could not be read ({type(exc).__name__}: {exc})") from None
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise InvalidInput(f"RIFE weights {weights} are not a state dict")
    state = {}
    for key, value in raw.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(("teacher.", "caltime.")):
            continue
        state[key] = value
    return state


def _pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class RifeInterpolator:
    """A loaded IFNet with numpy in/out: frames are uint8 (H, W, 3) RGB."""

    def __init__(self, net: IFNet, device: torch.device, half: bool) -> None:
        self.net = net
        self.device = device
        self.dtype = torch.float16 if half else torch.float32
        self._lock = threading.Lock()  # one inference at a time per instance (the grid cache is shared)

    @classmethod
    def load(cls, weights: Path | None = None, device: str | None = None, *, half: bool | None = None
             ) -> RifeInterpolator:
        from source.model_files import rife_weights_path

        path = Path(weights) if weights is not None else rife_weights_path()
        dev = _pick_device(device)
        net = IFNet()
        state = load_ifnet_state(path)
        missing, unexpected = net.load_published(state)
        if missing or unexpected:
            raise InvalidInput(f"{path.name} is not a RIFE v4.x (5-block IFNet) checkpoint: "
                               f"missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}")
        use_half = (dev.type == "cuda") if half is None else bool(half and dev.type == "cuda")
        net = net.to(dev).eval()
        if use_half:
            net = net.half()
        return cls(net, dev, use_half)

    # -- tensor plumbing -----------------------------------------------------------------------
    def _to_tensor(self, frame: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(_check_frame(frame))
        if not a.flags.writeable:  # torch warns on read-only buffers (e.g. frames decoded by PyAV)
            a = a.copy()
        x = torch.from_numpy(a).to(self.device).permute(2, 0, 1).unsqueeze(0)
        return x.to(self.dtype) / 255.0

    @staticmethod
    def _pad(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x

    def _to_frame(self, y: torch.Tensor, h: int, w: int) -> np.ndarray:
        y = y[0, :, :h, :w].float().clamp_(0, 1).mul_(255.0).add_(0.5)
        return y.to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    # -- API -------------------------------------------------------------------------------------
    def interpolate(self, a: np.ndarray, b: np.ndarray, t: float = 0.5) -> np.ndarray:
        """The frame at time t in [0, 1] between a (t=0) and b (t=1)."""
        if a.shape != b.shape:
            raise InvalidInput(f"RIFE needs two frames of one size, got {a.shape} and {b.shape}")
        t = float(t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must lie in [0, 1], got {t}")
        if t == 0.0:
            return np.array(a, dtype=np.uint8, copy=True)
        if t == 1.0:
            return np.array(b, dtype=np.uint8, copy=True)
        h, w = a.shape[:2]
        with self._lock, torch.inference_mode():
            x0 = self._pad(self._to_tensor(a))
            x1 = self._pad(self._to_tensor(b))
            return self._to_frame(self.net(x0, x1, t), h, w)

    def transition(self, a: np.ndarray, b: np.ndarray, num_frames: int) -> Iterator[np.ndarray]:
        """num_frames (>= 2) frames from a to b inclusive at evenly spaced t, streamed one by one.

        RIFE v4 takes an arbitrary t, so every frame is predicted directly from the two endpoints
        (no recursive halving, no cap on the count)."""
        n = int(num_frames)
        if n < 2:
            raise InvalidInput(f"a transition needs at least 2 frames, got {num_frames}")
        if a.shape != b.shape:
            raise InvalidInput(f"RIFE needs two frames of one size, got {a.shape} and {b.shape}")
        for i in range(n):
            yield self.interpolate(a, b, i / (n - 1))


def _check_frame(frame: np.ndarray) -> np.ndarray:
    a = np.asarray(frame)
    if a.ndim != 3 or a.shape[2] != 3:
        raise InvalidInput(f"expected an (H, W, 3) RGB frame, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return a


_rife: Warm[RifeInterpolator] = Warm(lambda _: RifeInterpolator.load())


def get_rife() -> RifeInterpolator:
    """The process-wide warm interpolator (loaded on first use)."""
    return _rife.get()


__all__ = ["RifeInterpolator", "get_rife", "IFNet", "load_ifnet_state", "PAD_MULTIPLE"]
