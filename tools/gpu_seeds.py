"""Train several paper-recipe mini-Xceptions at once on a GPU, then one net distilled from them.

Why this exists: the 2-core CPU machine trains one 64 px mini-Xception by the paper's
recipe in about 3 hours, so issue 9 could measure only one independently trained copy of
the paper's net. When a session is lent a GPU machine (PyTorch, no TensorFlow), this
script trains ``--models`` copies *in one network*: every layer is a grouped convolution
with one group per copy, so the copies share each kernel launch but no weight, gradient,
batch-norm statistic or Adam moment (Adam is elementwise). Each copy draws its own
initialisation, shuffling and augmentation. Stage 2 distils the copies' averaged answer
into ``--students`` fresh copies (ensemble distillation: the student learns, on each
augmented face, the probabilities the copies give that same face).

The recipe is the one of ``jobs/train-minixception-64-paper.toml``: FER2013 Training
labels, faces scaled 48 -> 64 px, flip / +-10 deg rotation / +-10 % zoom and shift, L2 0.01
on the two stem convolutions, Adam (eps 1e-7), batch 64, learning rate 0.002 with 2
warm-up epochs and a cosine decay to 1 % over the epochs. PublicTest is only printed; it
chooses nothing (the last epoch is what is kept). The epoch count is fixed from the
measured speed before training starts, if the device cannot fit 100.

Three steps, two machines:

    python tools/gpu_seeds.py pack gpu_data/fer64.npz.xz           # here: FER2013 as arrays
    python tools/gpu_seeds.py train gpu_data/fer64.npz.xz $OUT     # on the GPU machine
    python tools/gpu_seeds.py to-keras OUT/stage1.npz runs/gpu-seeds # here: tf_keras .h5 files

``to-keras`` rebuilds each copy with ``videmo.train.model.build_mini_xception`` and checks
that it gives the probabilities PyTorch gave on PublicTest's first 64 faces, so the .h5
files go through ``videmo import-keras`` / ``benchmarks/candidate.py`` like any other.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import math
import sys
import time
from pathlib import Path

import numpy as np

INPUT = 64
CLASSES = 7
MODULES = (16, 32, 64, 128)
STEM = 8
PROBE = 64  # PublicTest faces whose probabilities check the conversion


# ----------------------------------------------------------------------------- pack (here)
def pack(out: Path) -> None:
    """FER2013 Training and PublicTest as 48 px uint8 arrays, xz-compressed (about 55 MB)."""
    from videmo.train.data import load_fer2013

    splits = load_fer2013(
        Path(__file__).resolve().parents[2] / "shared/data/fer2013/fer2013.csv.gz"
    )
    buf = io.BytesIO()
    np.savez(buf, train_x=splits["Training"].images, train_y=splits["Training"].labels,
             val_x=splits["PublicTest"].images, val_y=splits["PublicTest"].labels)  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(lzma.compress(buf.getvalue(), preset=6))
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB", file=sys.stderr)


# ----------------------------------------------------------------------------- train (GPU)
def cosine_lr(
    epoch: int, epochs: int, lr: float, warmup: int = 2, low_ratio: float = 0.01
) -> float:
    """The same schedule as ``videmo.train.train.cosine_lr``."""
    if epoch < warmup:
        return lr * (epoch + 1) / (warmup + 1)
    t = min(1.0, (epoch - warmup) / max(1, epochs - warmup - 1))
    low = lr * low_ratio
    return low + 0.5 * (lr - low) * (1 + math.cos(math.pi * t))


def _grouped_net(torch, k: int):  # noqa: ANN001, ANN202 - torch is imported on the device only
    nn = torch.nn
    F = torch.nn.functional  # noqa: N806

    def bn(c: int):  # Keras defaults: eps 1e-3, momentum 0.99
        return nn.BatchNorm2d(k * c, eps=1e-3, momentum=0.01)

    def same_pool(x):  # Keras MaxPooling2D(3, 2, "same"): extra padding at bottom/right
        n = x.shape[-1]
        total = max((math.ceil(n / 2) - 1) * 2 + 3 - n, 0)
        a = total // 2
        x = F.pad(x, (a, total - a, a, total - a), value=float("-inf"))
        return F.max_pool2d(x, 3, 2)

    class Module(nn.Module):
        def __init__(self, c: int, f: int) -> None:
            super().__init__()
            self.res = nn.Conv2d(k * c, k * f, 1, stride=2, groups=k, bias=False)
            self.res_bn = bn(f)
            self.dw1 = nn.Conv2d(k * c, k * c, 3, padding=1, groups=k * c, bias=False)
            self.pw1 = nn.Conv2d(k * c, k * f, 1, groups=k, bias=False)
            self.bn1 = bn(f)
            self.dw2 = nn.Conv2d(k * f, k * f, 3, padding=1, groups=k * f, bias=False)
            self.pw2 = nn.Conv2d(k * f, k * f, 1, groups=k, bias=False)
            self.bn2 = bn(f)

        def forward(self, x):
            r = self.res_bn(self.res(x))
            x = F.relu(self.bn1(self.pw1(self.dw1(x))))
            x = self.bn2(self.pw2(self.dw2(x)))
            return same_pool(x) + r

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.k = k
            self.stem1 = nn.Conv2d(k, k * STEM, 3, groups=k, bias=False)
            self.stem1_bn = bn(STEM)
            self.stem2 = nn.Conv2d(k * STEM, k * STEM, 3, groups=k, bias=False)
            self.stem2_bn = bn(STEM)
            chans = (STEM, *MODULES)
            pairs = zip(chans, chans[1:], strict=False)
            self.blocks = nn.ModuleList(Module(c, f) for c, f in pairs)
            self.head = nn.Conv2d(k * MODULES[-1], k * CLASSES, 3, padding=1, groups=k)
            self._keras_init()

        def _keras_init(self) -> None:
            """Glorot-uniform as Keras computes fans (a depthwise kernel's fan-out is 9)."""
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    _, in_g, kh, kw = m.weight.shape
                    if m.groups > k:  # depthwise
                        fan_in, fan_out = kh * kw * (m.in_channels // k), kh * kw
                    else:
                        fan_in, fan_out = kh * kw * in_g, kh * kw * (m.out_channels // k)
                    limit = math.sqrt(6.0 / (fan_in + fan_out))
                    nn.init.uniform_(m.weight, -limit, limit)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

        def forward(self, x):  # x: (B, k, H, W) -> logits (B, k, 7)
            x = F.relu(self.stem1_bn(self.stem1(x)))
            x = F.relu(self.stem2_bn(self.stem2(x)))
            for block in self.blocks:
                x = block(x)
            x = self.head(x).mean(dim=(2, 3))
            return x.view(x.shape[0], self.k, CLASSES)

        def l2(self):
            return (self.stem1.weight**2).sum() + (self.stem2.weight**2).sum()

    return Net()


def _augment(torch, x, gen):  # noqa: ANN001, ANN202
    """Flip, rotation +-10 deg, zoom +-10 %, shift +-10 %, edges repeated (Keras 'nearest')."""
    F = torch.nn.functional  # noqa: N806
    n = x.shape[0]
    dev = x.device

    def u(lo: float, hi: float):
        return torch.rand(n, device=dev, generator=gen) * (hi - lo) + lo

    theta = u(-10, 10) * math.pi / 180
    zoom = u(0.9, 1.1)
    flip = torch.where(torch.rand(n, device=dev, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(theta) * zoom, torch.sin(theta) * zoom
    mat = torch.stack(
        [torch.stack([cos * flip, -sin, u(-0.2, 0.2)], 1),
         torch.stack([sin * flip, cos, u(-0.2, 0.2)], 1)], 1)  # fmt: skip
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _load_device_data(torch, path: Path, dev):  # noqa: ANN001, ANN202
    arrays = np.load(io.BytesIO(lzma.decompress(path.read_bytes())))
    F = torch.nn.functional  # noqa: N806

    def faces(a: np.ndarray):
        t = torch.from_numpy(a).to(dev).float().unsqueeze(1)
        t = F.interpolate(t, size=(INPUT, INPUT), mode="bilinear", align_corners=False)
        return ((t.round().clamp(0, 255) / 255.0 - 0.5) / 0.5).squeeze(1)  # ModelSpec.normalize

    return (faces(arrays["train_x"]), torch.from_numpy(arrays["train_y"]).long().to(dev),
            faces(arrays["val_x"]), torch.from_numpy(arrays["val_y"]).long().to(dev))  # fmt: skip


def _val_probs(torch, net, val_x):  # noqa: ANN001, ANN202
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(val_x), 512):
            b = val_x[i : i + 512]
            out.append(torch.softmax(net(b.unsqueeze(1).expand(-1, net.k, -1, -1)), -1))
    net.train()
    return torch.cat(out)  # (N, k, 7)


def _save(torch, net, path: Path, val_x, info: dict) -> None:  # noqa: ANN001
    state = {name: t.detach().cpu().numpy() for name, t in net.state_dict().items()}
    state["probe_probs"] = _val_probs(torch, net, val_x[:PROBE]).cpu().numpy()
    state["info"] = np.array(json.dumps(info))
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, **state)
    tmp.replace(path)


def _run_stage(torch, name, net, data, epochs_max, budget_s, batch, lr, seed, out, teacher=None):  # noqa: ANN001, PLR0913
    train_x, train_y, val_x, val_y = data
    dev = train_x.device
    k = net.k
    gen = torch.Generator(device=dev).manual_seed(seed)
    cpu_gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, eps=1e-7)
    steps = len(train_x) // batch

    def step(idx, lr_now: float) -> None:
        for g in opt.param_groups:
            g["lr"] = lr_now
        x = _augment(torch, train_x[idx].reshape(-1, 1, INPUT, INPUT), gen).reshape(
            -1, k, INPUT, INPUT
        )
        logits = net(x)
        logp = torch.log_softmax(logits, -1)
        if teacher is None:
            loss = -logp.gather(-1, train_y[idx].unsqueeze(-1)).mean() * k
            loss = loss + 0.01 * net.l2()
        else:
            with torch.no_grad():  # each student's own augmented face, through every teacher
                faces = x.permute(1, 0, 2, 3).reshape(-1, 1, INPUT, INPUT)
                probs = torch.softmax(teacher(faces.expand(-1, teacher.k, -1, -1)), -1).mean(1)
                target = probs.view(k, -1, CLASSES).permute(1, 0, 2)
            loss = -(target * logp).sum(-1).mean() * k + 0.01 * net.l2()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def perms():
        return torch.stack(
            [torch.randperm(len(train_x), generator=cpu_gen) for _ in range(k)], 1
        ).to(dev)

    # Time 40 steps first, so the epoch count (and its cosine schedule) is fixed up front.
    order = perms()
    for s in range(5):
        step(order[s * batch : (s + 1) * batch], 1e-6)
    _sync(torch)
    t0 = time.time()
    for s in range(5, 45):
        step(order[s * batch : (s + 1) * batch], 1e-6)
    _sync(torch)
    per_epoch = (time.time() - t0) / 40 * steps
    epochs = int(min(epochs_max, budget_s // per_epoch))
    if epochs < 1:  # a stage 2 from untrained teachers would look like a result
        raise SystemExit(f"{name}: {budget_s:g} s is less than one epoch ({per_epoch:.0f} s)")
    info = {"stage": name, "models": k, "epochs": epochs, "seconds_per_epoch": per_epoch,
            "batch": batch, "lr": lr, "seed": seed}  # fmt: skip
    print(json.dumps(info), flush=True)
    net.load_state_dict(_fresh_state(torch, net, seed))  # the timing steps leave no trace
    opt = torch.optim.Adam(net.parameters(), lr=lr, eps=1e-7)
    start = time.time()
    for epoch in range(epochs):
        order = perms()
        lr_now = cosine_lr(epoch, epochs, lr)
        for s in range(steps):
            step(order[s * batch : (s + 1) * batch], lr_now)
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            probs = _val_probs(torch, net, val_x)
            each = (probs.argmax(-1) == val_y[:, None]).float().mean(0).tolist()
            ens = float((probs.mean(1).argmax(-1) == val_y).float().mean())
            info.update(done_epochs=epoch + 1, publictest_each=each, publictest_mean_of_probs=ens)
            shown = [round(a, 4) for a in each]
            print(f"{name} epoch {epoch + 1}/{epochs} {time.time() - start:.0f}s "
                  f"PublicTest each {shown} averaged {ens:.4f}", flush=True)  # fmt: skip
            _save(torch, net, out / f"{name}.npz", val_x, info)
    net.eval()
    return net


def _sync(torch) -> None:  # noqa: ANN001
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _fresh_state(torch, net, seed: int):  # noqa: ANN001, ANN202
    torch.manual_seed(seed)
    fresh = type(net)()
    return fresh.state_dict()


def train(data: Path, out: Path, models: int, students: int, budget1: float, budget2: float,
          epochs: int, batch: int, lr: float, seed: int, limit: int = 0,
          teachers_from: Path | None = None) -> None:  # fmt: skip
    import torch

    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out.mkdir(parents=True, exist_ok=True)
    t = time.time()
    arrays = _load_device_data(torch, data, dev)
    if limit:
        arrays = (arrays[0][:limit], arrays[1][:limit], *arrays[2:])
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"data on {name} in {time.time() - t:.0f}s: "
          f"{len(arrays[0])} Training, {len(arrays[2])} PublicTest", flush=True)  # fmt: skip
    if teachers_from:  # stage 1 of an earlier run: distil its copies again
        state = np.load(teachers_from)
        teachers = _grouped_net(torch, state["stem1.weight"].shape[0] // STEM).to(dev)
        teachers.load_state_dict({n: torch.from_numpy(state[n]) for n in teachers.state_dict()})
        teachers.eval()
    else:
        torch.manual_seed(seed)
        teachers = _run_stage(torch, "stage1", _grouped_net(torch, models).to(dev), arrays,
                              epochs, budget1, batch, lr, seed, out)  # fmt: skip
    for p in teachers.parameters():
        p.requires_grad_(False)
    if students:
        torch.manual_seed(seed + 1)
        _run_stage(torch, "stage2", _grouped_net(torch, students).to(dev), arrays,
                   epochs, budget2, batch, lr, seed + 1, out, teacher=teachers)  # fmt: skip


# ----------------------------------------------------------------------------- to-keras (here)
def to_keras(npz: Path, out_dir: Path, prefix: str) -> list[Path]:
    """Split a grouped checkpoint into tf_keras mini-Xceptions and check each against PyTorch."""
    import tf_keras as keras

    from videmo.spec import ModelSpec
    from videmo.train.model import build_mini_xception

    try:
        state = dict(np.load(npz))
        k = state["stem1.weight"].shape[0] // STEM
    except Exception as exc:  # noqa: BLE001 - BadZipFile, KeyError...: one line, not a traceback
        raise SystemExit(f"{npz}: not a checkpoint of this script ({exc})") from None
    if out_dir.exists() and not out_dir.is_dir():
        raise SystemExit(f"{out_dir}: not a folder")
    spec = ModelSpec(input_size=INPUT)
    arrays = _probe_faces(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    checked = []  # every copy is checked before any is named: no partial set
    for j in range(k):
        keras.backend.clear_session()
        model = build_mini_xception(spec, width=1.0)
        try:
            _set_weights(model, state, j, k)
        except (KeyError, ValueError) as exc:
            raise SystemExit(f"{npz}: copy {j} does not fit the network ({exc})") from None
        probs = np.asarray(model(arrays, training=False))
        diff = float(np.abs(probs - state["probe_probs"][:, j]).max())
        if diff > 5e-3:  # the GPU computed the probe in TF32: about 1e-3 from float32
            raise SystemExit(f"copy {j}: Keras and PyTorch differ by {diff:.2e} on the probe faces")
        part = out_dir / f".{prefix}{j}.part.h5"
        model.save(part)
        checked.append((part, diff))
    written = []
    for j, (part, diff) in enumerate(checked):
        path = out_dir / f"{prefix}{j}.h5"
        part.replace(path)
        print(f"{path}: probe faces agree within {diff:.1e}", file=sys.stderr)
        written.append(path)
    return written


def _probe_faces(spec) -> np.ndarray:  # noqa: ANN001
    """PublicTest's first faces, scaled exactly as on the device (PyTorch's bilinear, rounded)."""
    from videmo.train.data import load_fer2013

    val = load_fer2013(Path(__file__).resolve().parents[2] / "shared/data/fer2013/fer2013.csv.gz")
    faces = val["PublicTest"].images[:PROBE].astype(np.float64)
    i0, i1, w = _bilinear_taps(faces.shape[1], INPUT)
    rows = faces[:, i0, :] * (1 - w)[None, :, None] + faces[:, i1, :] * w[None, :, None]
    up = rows[:, :, i0] * (1 - w) + rows[:, :, i1] * w
    return spec.normalize(np.round(up).clip(0, 255).astype(np.uint8))


def _bilinear_taps(n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source pixels and weights of ``F.interpolate(..., 'bilinear', align_corners=False)``."""
    src = np.maximum((np.arange(size) + 0.5) * n / size - 0.5, 0.0)
    i0 = np.floor(src).astype(int)
    return i0, np.minimum(i0 + 1, n - 1), src - i0


def _slice(a: np.ndarray, j: int, k: int) -> np.ndarray:
    n = a.shape[0] // k
    return a[j * n : (j + 1) * n]


def _conv(state, name: str, j: int, k: int) -> np.ndarray:  # noqa: ANN001
    return _slice(state[name], j, k).transpose(2, 3, 1, 0)  # (out,in,h,w) -> (h,w,in,out)


def _bn(state, name: str, j: int, k: int) -> list[np.ndarray]:  # noqa: ANN001
    return [
        _slice(state[f"{name}.{p}"], j, k)
        for p in ("weight", "bias", "running_mean", "running_var")
    ]


def _set_weights(model, state, j: int, k: int) -> None:  # noqa: ANN001
    """Keras layers by creation order (their name counters) <- the grouped net's slice ``j``."""
    import tf_keras as keras

    convs = _by_counter(model, keras.layers.Conv2D, "conv2d")
    seps = _by_counter(model, keras.layers.SeparableConv2D, "separable_conv2d")
    bns = _by_counter(model, keras.layers.BatchNormalization, "batch_normalization")
    conv_names = ["stem1", "stem2"] + [f"blocks.{b}.res" for b in range(4)] + ["head"]
    for layer, name in zip(convs, conv_names, strict=True):
        weights = [_conv(state, f"{name}.weight", j, k)]
        if name == "head":
            weights.append(_slice(state["head.bias"], j, k))
        layer.set_weights(weights)
    sep_names = [f"blocks.{b}.{w}" for b in range(4) for w in (1, 2)]
    for layer, name in zip(seps, sep_names, strict=True):
        block, w = name.rsplit(".", 1)
        depth = _slice(state[f"{block}.dw{w}.weight"], j, k).transpose(2, 3, 0, 1)  # (h,w,in,1)
        layer.set_weights([depth, _conv(state, f"{block}.pw{w}.weight", j, k)])
    bn_names = ["stem1_bn", "stem2_bn"] + [
        f"blocks.{b}.{n}" for b in range(4) for n in ("res_bn", "bn1", "bn2")
    ]
    for layer, name in zip(bns, bn_names, strict=True):
        layer.set_weights(_bn(state, name, j, k))


def _by_counter(model, kind, base: str) -> list:  # noqa: ANN001
    """Layers of ``kind`` in creation order: Keras names them base, base_1, base_2..."""

    def counter(layer) -> int:  # noqa: ANN001
        rest = layer.name[len(base) :]
        return int(rest[1:]) if rest else 0

    return sorted((la for la in model.layers if type(la) is kind), key=counter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("out", type=Path)
    t = sub.add_parser("train")
    t.add_argument("data", type=Path)
    t.add_argument("out", type=Path)
    t.add_argument("--models", type=int, default=8)
    t.add_argument("--students", type=int, default=2)
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--budget1", type=float, default=240.0, help="seconds for stage 1")
    t.add_argument("--budget2", type=float, default=170.0, help="seconds for stage 2")
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=0.002)
    t.add_argument("--seed", type=int, default=7)
    t.add_argument("--limit", type=int, default=0, help="first N Training faces (a smoke test)")
    t.add_argument("--teachers", type=Path, help="stage1.npz of an earlier run: skip stage 1")
    c = sub.add_parser("to-keras")
    c.add_argument("npz", type=Path)
    c.add_argument("out_dir", type=Path)
    c.add_argument("--prefix", default="net")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.out)
    elif args.command == "train":
        train(args.data, args.out, args.models, args.students, args.budget1, args.budget2,
              args.epochs, args.batch, args.lr, args.seed, args.limit, args.teachers)  # fmt: skip
    else:
        to_keras(args.npz, args.out_dir, args.prefix)


if __name__ == "__main__":
    main()
