"""A zoo of the model shapes users actually bring, each small enough to convert in seconds.

Every maker writes one model the way a user would make it (``keras.Sequential`` and
``model.save``, ``torch.onnx.export``, ``tf.lite.TFLiteConverter``...) and returns the
``edgeship build`` arguments that take it. Models are built on first use and cached under
$EDGESHIP_TEST_VENVS (default ~/.cache/edgeship/test-venvs)/zoo/<name>-<key>, the key hashing
this file and the framework versions, so a change to a maker rebuilds it. Random weights
(weights=None): nothing is downloaded, and int8 calibration runs on generated data.

torchvision's CPU wheels are not on PyPI (its PyPI wheels need the CUDA build of torch), so
``mobilenet_v3_small`` and ``resnet18`` are written here in plain torch, layer for layer as
torchvision defines them (torchvision/models/mobilenetv3.py and resnet.py, weights=None).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

HERE = Path(__file__).resolve()


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str  # keras | torch | onnx | tflite
    make: Callable[[Path], List[str]]  # folder -> `edgeship build` model arguments (paths relative to the folder)
    what: str


ZOO: Dict[str, ZooModel] = {}


def zoo(name: str, family: str, what: str) -> Callable[[Callable[[Path], List[str]]], Callable[[Path], List[str]]]:
    def register(fn: Callable[[Path], List[str]]) -> Callable[[Path], List[str]]:
        ZOO[name] = ZooModel(name, family, fn, what)
        return fn

    return register


def _versions(family: str) -> str:
    import importlib.metadata as md

    pkgs = {"keras": ["tensorflow", "keras"], "tflite": ["tensorflow", "keras"], "torch": ["torch"], "onnx": ["torch", "onnx"]}[family]
    out = []
    for p in pkgs:
        try:
            out.append(f"{p}=={md.version(p)}")
        except md.PackageNotFoundError:
            out.append(f"{p}==none")
    return ",".join(out)


def zoo_root() -> Path:
    base = Path(os.environ.get("EDGESHIP_TEST_VENVS") or Path.home() / ".cache" / "edgeship" / "test-venvs")
    return base / "zoo"


def model_dir(name: str) -> Path:
    """The cached folder of one zoo model, keyed by the code that makes it and the framework versions
    (a change to its maker, to the helpers or to the torch nets rebuilds it)."""
    import inspect

    m = ZOO[name]
    code = [inspect.getsource(m.make)] + [inspect.getsource(f) for f in (_keras, _small_cnn, _tflite_cnn, _export, _torch_nets, _main)]
    if m.family in ("torch", "onnx"):
        code.append(TORCH_NETS)
    key = hashlib.sha256("\n".join(code + [_versions(m.family), str(sys.version_info[:2])]).encode()).hexdigest()[:12]
    return zoo_root() / f"{name}-{key}"


def ensure(name: str) -> tuple[Path, List[str]]:
    """(folder, build arguments) of a zoo model, made in a child process the first time (TF and torch
    stay out of the test process) and renamed into place when complete."""
    from edgeship import venvs

    dest = model_dir(name)
    args_file = dest / "args.txt"
    if not args_file.is_file():

        def build(work: Path) -> None:
            work.mkdir(parents=True)
            r = subprocess.run(
                [sys.executable, str(HERE), name, str(work)],
                capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(HERE.parent.parent)},
            )
            if r.returncode != 0:
                raise RuntimeError(f"making zoo model {name} failed:\n{r.stderr[-3000:]}")

        venvs.build_in_place(dest, build, lambda d: (d / "args.txt").is_file())
    return dest, args_file.read_text().split("\n")


# --------------------------------------------------------------------------- Keras

def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    return keras


def _small_cnn(keras, with_input: bool):  # type: ignore[no-untyped-def]
    layers = [
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ]
    m = keras.Sequential(([keras.Input((28, 28, 1))] if with_input else []) + layers)
    if not with_input:
        m(np.zeros((1, 28, 28, 1), np.float32))  # built by a first call, as a notebook does
    return m


@zoo("seq_input_keras", "keras", "keras.Sequential CNN with an Input layer, .keras")
def seq_input_keras(d: Path) -> List[str]:
    _small_cnn(_keras(), True).save(d / "model.keras")
    return ["--model", "model.keras"]


@zoo("seq_noinput_keras", "keras", "keras.Sequential CNN without an Input layer (built by a call), .keras")
def seq_noinput_keras(d: Path) -> List[str]:
    _small_cnn(_keras(), False).save(d / "model.keras")
    return ["--model", "model.keras"]


@zoo("seq_input_h5", "keras", "keras.Sequential CNN with an Input layer, legacy .h5")
def seq_input_h5(d: Path) -> List[str]:
    _small_cnn(_keras(), True).save(d / "model.h5")
    return ["--model", "model.h5"]


@zoo("seq_noinput_h5", "keras", "keras.Sequential CNN without an Input layer, legacy .h5")
def seq_noinput_h5(d: Path) -> List[str]:
    _small_cnn(_keras(), False).save(d / "model.h5")
    return ["--model", "model.h5"]


@zoo("functional_multi_io", "keras", "functional model, an image and a vector in, class scores and a regression out")
def functional_multi_io(d: Path) -> List[str]:
    keras = _keras()
    img = keras.Input((24, 24, 3), name="image")
    meta = keras.Input((6,), name="meta")
    x = keras.layers.Conv2D(8, 3, activation="relu")(img)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Concatenate()([x, keras.layers.Dense(8, activation="relu")(meta)])
    cls = keras.layers.Dense(5, activation="softmax", name="label")(x)
    reg = keras.layers.Dense(2, name="box")(x)
    keras.Model([img, meta], [cls, reg]).save(d / "model.keras")
    return ["--model", "model.keras"]


@zoo("subclassed_savedmodel", "keras", "subclassed keras.Model, exported as a SavedModel with model.export()")
def subclassed_savedmodel(d: Path) -> List[str]:
    keras = _keras()

    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.conv = keras.layers.Conv2D(8, 3, activation="relu")
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.out = keras.layers.Dense(4)

        def call(self, x):  # type: ignore[no-untyped-def]
            return self.out(self.pool(self.conv(x)))

    net = Net()
    net(np.zeros((1, 20, 20, 3), np.float32))
    net.export(str(d / "saved"), verbose=False)
    return ["--model", "saved"]


@zoo("mobilenet_v2", "keras", "keras.applications.MobileNetV2, alpha 0.35, 64 px, weights=None")
def mobilenet_v2(d: Path) -> List[str]:
    keras = _keras()
    keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None, classes=10).save(d / "model.keras")
    return ["--model", "model.keras"]


@zoo("efficientnet_b0", "keras", "keras.applications.EfficientNetB0, 32 px, weights=None (Rescaling + Normalization inside)")
def efficientnet_b0(d: Path) -> List[str]:
    keras = _keras()
    keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=10).save(d / "model.keras")
    return ["--model", "model.keras"]


@zoo("resnet50", "keras", "keras.applications.ResNet50, 32 px, weights=None")
def resnet50(d: Path) -> List[str]:
    keras = _keras()
    keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=10).save(d / "model.keras")
    return ["--model", "model.keras"]


@zoo("bn_heavy", "keras", "Conv-BatchNorm-ReLU blocks with trained (non-trivial) BatchNorm statistics")
def bn_heavy(d: Path) -> List[str]:
    keras = _keras()
    inp = keras.Input((32, 32, 3))
    x = inp
    for f in (8, 8, 16, 16, 32):
        x = keras.layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, keras.layers.Dense(10)(x))
    rng = np.random.default_rng(0)
    for layer in m.layers:  # moving statistics that are not the initial 0/1
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
    m.save(d / "model.keras")
    return ["--model", "model.keras"]


@zoo("conv1d_audio", "keras", "Conv1D over 49 frames x 40 log-mel bins (keyword spotting shape)")
def conv1d_audio(d: Path) -> List[str]:
    keras = _keras()
    keras.Sequential([
        keras.Input((49, 40)),
        keras.layers.Conv1D(16, 3, activation="relu"),
        keras.layers.MaxPooling1D(),
        keras.layers.Conv1D(32, 3, activation="relu"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(12, activation="softmax"),
    ]).save(d / "model.keras")
    return ["--model", "model.keras"]


@zoo("lstm", "keras", "LSTM over 20 steps x 8 features")
def lstm(d: Path) -> List[str]:
    keras = _keras()
    keras.Sequential([keras.Input((20, 8)), keras.layers.LSTM(16), keras.layers.Dense(3)]).save(d / "model.keras")
    return ["--model", "model.keras"]


@zoo("gru", "keras", "GRU over 20 steps x 8 features, returning sequences")
def gru(d: Path) -> List[str]:
    keras = _keras()
    keras.Sequential([
        keras.Input((20, 8)), keras.layers.GRU(16, return_sequences=True), keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3)
    ]).save(d / "model.keras")
    return ["--model", "model.keras"]


@zoo("transformer_block", "keras", "Transformer encoder block: MultiHeadAttention, LayerNormalization, GELU MLP")
def transformer_block(d: Path) -> List[str]:
    keras = _keras()
    inp = keras.Input((16, 32))
    a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=16)(inp, inp)
    x = keras.layers.LayerNormalization()(inp + a)
    f = keras.layers.Dense(64, activation="gelu")(x)
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(32)(f))
    x = keras.layers.GlobalAveragePooling1D()(x)
    keras.Model(inp, keras.layers.Dense(4)(x)).save(d / "model.keras")
    return ["--model", "model.keras"]


@zoo("embedding_text", "keras", "Embedding text classifier on int32 token ids")
def embedding_text(d: Path) -> List[str]:
    keras = _keras()
    keras.Sequential([
        keras.Input((24,), dtype="int32"),
        keras.layers.Embedding(500, 16),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(2),
    ]).save(d / "model.keras")
    return ["--model", "model.keras"]


@zoo("preprocessing_inside", "keras", "Rescaling and a fitted Normalization layer inside the model, 0-255 input")
def preprocessing_inside(d: Path) -> List[str]:
    keras = _keras()
    norm = keras.layers.Normalization()
    norm.adapt(np.random.default_rng(0).uniform(0, 1, (64, 24, 24, 3)).astype("float32"))
    keras.Sequential([
        keras.Input((24, 24, 3)),
        keras.layers.Rescaling(1 / 255.0),
        norm,
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5),
    ]).save(d / "model.keras")
    return ["--model", "model.keras"]


# --------------------------------------------------------------------------- PyTorch (factory path)

TORCH_NETS = '''"""mobilenet_v3_small and resnet18 in plain torch, layer for layer as torchvision defines them
(torchvision's CPU wheels are not on PyPI), and a fully convolutional net for any height and width."""
import torch
from torch import nn
from torch.nn import functional as F


def _div(v, divisor=8, min_value=None):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1, act=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=0.001, momentum=0.01)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, c, squeeze):
        super().__init__()
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class InvertedResidual(nn.Module):
    def __init__(self, cin, k, exp, cout, se, act, stride):
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        a = nn.Hardswish if act == "HS" else nn.ReLU
        layers = []
        if exp != cin:
            layers.append(ConvBNAct(cin, exp, 1, act=a))
        layers.append(ConvBNAct(exp, exp, k, stride, groups=exp, act=a))
        if se:
            layers.append(SqueezeExcitation(exp, _div(exp // 4)))
        layers.append(ConvBNAct(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res else y


# torchvision's mobilenet_v3_conf("mobilenet_v3_small"): in, kernel, expanded, out, SE, activation, stride
SMALL = [
    (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1),
]


class MobileNetV3Small(nn.Module):
    def __init__(self, num_classes=1000, last_channel=1024):
        super().__init__()
        layers = [ConvBNAct(3, 16, 3, 2, act=nn.Hardswish)]
        layers += [InvertedResidual(*c) for c in SMALL]
        layers.append(ConvBNAct(96, 576, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(576, last_channel), nn.Hardswish(inplace=True), nn.Dropout(0.2, inplace=True), nn.Linear(last_channel, num_classes)
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + idt)


class ResNet18(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans, layers, cin = (64, 128, 256, 512), [], 64
        for i, c in enumerate(chans):
            layers.append(nn.Sequential(BasicBlock(cin, c, 1 if i == 0 else 2), BasicBlock(c, c)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class AnySize(nn.Module):
    """Fully convolutional: any height and width (global pooling before the head)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(ConvBNAct(3, 8, 3, 2), ConvBNAct(8, 16, 3, 2), ConvBNAct(16, 16, 3, 1))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.body(x), 1).flatten(1))


class TokenNet(nn.Module):
    """Token ids (int64) in: an embedding bag classifier."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(300, 16)
        self.fc = nn.Linear(16, 3)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(dim=1))


def _eval(m):
    torch.manual_seed(0)
    return m


def mobilenet_v3_small():
    torch.manual_seed(0)
    return MobileNetV3Small(num_classes=10)


def resnet18():
    torch.manual_seed(0)
    return ResNet18(num_classes=10)


def any_size():
    torch.manual_seed(0)
    return AnySize()


def token_net():
    torch.manual_seed(0)
    return TokenNet()
'''


def _torch_nets(d: Path):  # type: ignore[no-untyped-def]
    (d / "zoo_nets.py").write_text(TORCH_NETS)
    sys.path.insert(0, str(d))
    import zoo_nets

    return zoo_nets


@zoo("torch_mobilenet_v3_small", "torch", "torchvision's mobilenet_v3_small (plain torch), 32 px, random weights, --weights state_dict")
def torch_mobilenet_v3_small(d: Path) -> List[str]:
    import torch

    torch.save(_torch_nets(d).mobilenet_v3_small().state_dict(), d / "weights.pt")
    return ["--model", "zoo_nets:mobilenet_v3_small", "--weights", "weights.pt", "--input-shape", "input:1x3x32x32"]


@zoo("torch_resnet18", "torch", "torchvision's resnet18 (plain torch), 32 px, random weights")
def torch_resnet18(d: Path) -> List[str]:
    _torch_nets(d)
    return ["--model", "zoo_nets:resnet18", "--input-shape", "input:1x3x32x32"]


@zoo("torch_any_size", "torch", "fully convolutional module (dynamic height and width), built at 40x56")
def torch_any_size(d: Path) -> List[str]:
    _torch_nets(d)
    return ["--model", "zoo_nets:any_size", "--input-shape", "input:1x3x40x56"]


# --------------------------------------------------------------------------- ONNX files

def _export(d: Path, net, example, name: str, opset: int, dynamic: Dict[str, Dict[int, str]], **kw) -> Path:  # type: ignore[no-untyped-def]
    import torch

    path = d / name
    net.eval()
    torch.onnx.export(net, example, str(path), input_names=["input"], output_names=["output"], dynamic_axes=dynamic,
                      opset_version=opset, dynamo=False, **kw)
    return path


@zoo("onnx_opset13_dynamic", "onnx", "torch export at opset 13, dynamic batch, height and width (NCHW)")
def onnx_opset13_dynamic(d: Path) -> List[str]:
    import torch

    net = _torch_nets(d).any_size()
    _export(d, net, torch.zeros(1, 3, 32, 32), "model.onnx", 13, {"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n"}})
    return ["--model", "model.onnx", "--input-shape", "input:1x3x32x32"]


@zoo("onnx_opset17_dynamic", "onnx", "torch export at opset 17, dynamic batch, height and width (NCHW)")
def onnx_opset17_dynamic(d: Path) -> List[str]:
    import torch

    net = _torch_nets(d).any_size()
    _export(d, net, torch.zeros(1, 3, 32, 32), "model.onnx", 17, {"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n"}})
    return ["--model", "model.onnx", "--input-shape", "input:1x3x48x40"]


@zoo("onnx_external_data", "onnx", "a CNN saved with its weights in an external data file")
def onnx_external_data(d: Path) -> List[str]:
    import onnx
    import torch

    tmp = _export(d, _torch_nets(d).any_size(), torch.zeros(1, 3, 32, 32), "tmp.onnx", 17, {"input": {0: "n"}, "output": {0: "n"}})
    model = onnx.load(str(tmp))
    tmp.unlink()
    onnx.save_model(model, str(d / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=256)
    assert (d / "model.onnx.data").is_file()
    return ["--model", "model.onnx"]


@zoo("onnx_nchw_static", "onnx", "static NCHW 1x3x32x32 model (no dynamic axes)")
def onnx_nchw_static(d: Path) -> List[str]:
    import torch

    _export(d, _torch_nets(d).any_size(), torch.zeros(1, 3, 32, 32), "model.onnx", 17, {})
    return ["--model", "model.onnx"]


@zoo("onnx_int64_input", "onnx", "token ids as an int64 input (Embedding), dynamic batch")
def onnx_int64_input(d: Path) -> List[str]:
    import torch

    _export(d, _torch_nets(d).token_net(), torch.zeros(1, 12, dtype=torch.int64), "model.onnx", 17, {"input": {0: "n"}, "output": {0: "n"}})
    return ["--model", "model.onnx"]


# --------------------------------------------------------------------------- TFLite files

def _tflite_cnn(keras):  # type: ignore[no-untyped-def]
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.DepthwiseConv2D(3, activation="relu"),
        keras.layers.Conv2D(16, 1, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(6, activation="softmax"),
    ])


@zoo("tflite_int8_foreign", "tflite", "full-integer int8 TFLite (int8 in and out) converted elsewhere")
def tflite_int8_foreign(d: Path) -> List[str]:
    keras = _keras()
    import tensorflow as tf

    m = _tflite_cnn(keras)
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    rng = np.random.default_rng(1)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.random((1, 32, 32, 3), dtype=np.float32)] for _ in range(32))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    (d / "model_int8.tflite").write_bytes(conv.convert())
    return ["--model", "model_int8.tflite"]


@zoo("tflite_fp16", "tflite", "float16-weight TFLite")
def tflite_fp16(d: Path) -> List[str]:
    keras = _keras()
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(_tflite_cnn(keras))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    (d / "model_fp16.tflite").write_bytes(conv.convert())
    return ["--model", "model_fp16.tflite"]


@zoo("tflite_two_signatures", "tflite", "TFLite with two signatures (classify, embed)")
def tflite_two_signatures(d: Path) -> List[str]:
    _keras()
    import tensorflow as tf

    class Two(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(2)
            self.w1 = tf.Variable(rng.normal(0, 0.3, (12, 8)).astype("float32"))
            self.w2 = tf.Variable(rng.normal(0, 0.3, (8, 3)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([1, 12], tf.float32, name="x")])
        def classify(self, x):  # type: ignore[no-untyped-def]
            return {"scores": tf.nn.softmax(tf.matmul(tf.nn.relu(tf.matmul(x, self.w1)), self.w2))}

        @tf.function(input_signature=[tf.TensorSpec([1, 12], tf.float32, name="x")])
        def embed(self, x):  # type: ignore[no-untyped-def]
            return {"embedding": tf.nn.relu(tf.matmul(x, self.w1))}

    m = Two()
    saved = d / "sm"
    tf.saved_model.save(m, str(saved), signatures={"classify": m.classify, "embed": m.embed})
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["classify", "embed"])
    (d / "model_two_signatures.tflite").write_bytes(conv.convert())
    shutil.rmtree(saved)
    return ["--model", "model_two_signatures.tflite"]


# --------------------------------------------------------------------------- building a zoo model

TARGETS = ("x86_64", "arm64")
RUNS = "20"  # timed runs per artifact: the zoo checks building, not latency
SAMPLES = "40"  # generated calibration and held-out samples each (int8 on generated data proves the path, not accuracy)


@dataclass
class ZooBuild:
    name: str
    returncode: int
    stderr: str
    seconds: float
    reports: Dict[str, dict]  # target -> report.json (exit 0/1)
    cpu_seconds: float = 0.0  # user + system time of the build process (about its wall time on an idle machine)


def build(name: str, out: Path, env: Dict[str, str] | None = None) -> ZooBuild:
    """`edgeship build` of one zoo model for x86_64 and arm64 in one call, as a user runs it."""
    import json
    import resource
    import time

    folder, args = ensure(name)
    root = HERE.parent.parent
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "edgeship", "build", *args, "--target", ",".join(TARGETS), "--out", str(out), "--runs", RUNS,
         "--calibration-samples", SAMPLES, "--heldout-samples", SAMPLES, "-q"],
        cwd=folder, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )
    seconds = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    reports = {}
    for t in TARGETS:
        found = list(out.glob(f"*-{t}/report.json"))
        if found:
            reports[t] = json.loads(found[0].read_text())
    return ZooBuild(name, r.returncode, r.stderr, seconds, reports, cpu)


def contract_violations(b: ZooBuild) -> List[str]:
    """What breaks the zoo's contract (empty when kept):

    - exit 0 or 1: a bundle per target; every fp32 artifact built and within budget, every other
      artifact passes or is reported with its reason (not built, or its failed checks);
    - exit 2 or 3: no bundle, and one ``error:`` line on stderr (naming the layer/op and the fix);
    - never a traceback, never another exit code.
    """
    bad = []
    if "Traceback" in b.stderr:
        bad.append("traceback on stderr")
    if b.returncode in (0, 1):
        for t in TARGETS:
            rep = b.reports.get(t)
            if rep is None:
                bad.append(f"{t}: no report.json")
                continue
            built = {a["key"]: a for a in rep["artifacts"]}
            lost = {f["key"]: f for f in rep.get("failed_artifacts", [])}
            for a in rep["artifacts"]:
                if a["recipe"] == "fp32" and not a["passed"]:
                    bad.append(f"{t}: {a['path']} fp32 out of budget: {a['parity']['failures']}")
                if not a["passed"] and not a["parity"]["failures"] and a["required"]:
                    bad.append(f"{t}: {a['path']} failed without a reason")
            for key, f in lost.items():
                if not f["reason"].strip():
                    bad.append(f"{t}: {key} not built, without a reason")
                if key.endswith(":fp32") and not any(k.startswith(key.split(":")[0] + ":") and k.endswith("fp32") for k in built):
                    bad.append(f"{t}: fp32 {key} not built: {f['reason']}")
            if b.returncode == 0 and (not rep["passed"] or any(f["required"] for f in lost.values())):
                bad.append(f"{t}: exit 0 although required artifacts failed")
            if b.returncode == 1 and rep["passed"] and all(r.get("passed") for r in b.reports.values()):
                bad.append("exit 1 although every report passed")
    elif b.returncode in (2, 3):
        errors = [ln for ln in b.stderr.splitlines() if ln.startswith("error:")]
        if len(errors) != 1:
            bad.append(f"exit {b.returncode} with {len(errors)} error lines")
        if b.reports:
            bad.append(f"exit {b.returncode} but bundles were written")
    else:
        bad.append(f"exit {b.returncode}: {b.stderr.strip().splitlines()[-1:] or ''}")
    return bad


def _main(name: str, folder: str) -> None:
    d = Path(folder)
    args = ZOO[name].make(d)
    (d / "args.txt").write_text("\n".join(args))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
