"""Train a small convolutional network on the 8x8 handwritten digits with gradstate, from numpy.

    python -m gradstate.examples.train_digits [--epochs N] [--batch-size B] [--seed S]

The network, NHWC throughout:

    x (N, 8, 8, 1) -> conv 3x3, 16 -> instance norm -> ReLU        (N, 8, 8, 16)
                   -> conv 3x3 stride 2, 32 -> instance norm -> ReLU  (N, 4, 4, 32)
                   -> conv 4x4, 10 (the classifier head)          (N, 1, 1, 10) -> softmax cross-entropy

gradstate runs the convolutions and instance normalizations forward and backward and Adam updates their
weights, biases, gammas and betas; numpy does the ReLU and the loss. The 1797 images (shipped with
gradstate, see gradstate/data/README.md) are split once, with a fixed seed, into 1437 for training and
360 for testing. The exit status is 0 when the final test accuracy reaches 95%.
"""

import argparse
import gzip
import sys
import time
from importlib import resources

import numpy as np

import gradstate as gs

F32 = np.float32
TARGET_ACCURACY = 0.95


def load_digits():
    """The digits data set: images (1797, 8, 8) float32 with pixels from 0 to 16, labels (1797,) int64."""
    with (resources.files("gradstate") / "data" / "digits.csv.gz").open("rb") as compressed:
        data = np.loadtxt(gzip.open(compressed), delimiter=",", dtype=np.int64)
    return data[:, :64].reshape(-1, 8, 8).astype(F32), data[:, 64]


def split(images, labels, seed, test_size=360):
    """(x_train, y_train, x_test, y_test): a fixed random split, images scaled to [0, 1] as (N, 8, 8, 1)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    x = (images / 16.0).astype(F32)[..., None]
    test, train = order[:test_size], order[test_size:]
    return x[train], labels[train], x[test], labels[test]


def he_normal(rng, shape):
    """OHWI weights with the variance 2 / fan-in that keeps ReLU activations at a steady scale."""
    fan_in = shape[1] * shape[2] * shape[3]
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(F32)


class Network:
    def __init__(self, rng):
        # A bias before instance normalization would be removed by it, so those convolutions have none.
        self.conv1 = gs.Convolution(he_normal(rng, (16, 3, 3, 1)), padding="same")
        self.norm1 = gs.InstanceNormalization(16)
        self.conv2 = gs.Convolution(he_normal(rng, (32, 3, 3, 16)), stride=2, padding="same")
        self.norm2 = gs.InstanceNormalization(32)
        self.head = gs.Convolution(0.5 * he_normal(rng, (10, 4, 4, 32)), bias=np.zeros(10, F32))
        # The first layer's input needs no gradient.
        self.conv1_grad = gs.ConvolutionGradient(self.conv1, option=gs.GradientOption.WEIGHTS_AND_BIAS)
        self.norm1_grad = gs.InstanceNormalizationGradient(self.norm1)
        self.conv2_grad = gs.ConvolutionGradient(self.conv2)
        self.norm2_grad = gs.InstanceNormalizationGradient(self.norm2)
        self.head_grad = gs.ConvolutionGradient(self.head)

    def forward(self, x):
        """The logits (N, 10), and what the backward pass needs."""
        a1, s_conv1 = self.conv1.forward(x)
        b1, s_norm1 = self.norm1.forward(a1)
        r1 = np.maximum(b1, 0.0)
        a2, s_conv2 = self.conv2.forward(r1)
        b2, s_norm2 = self.norm2.forward(a2)
        r2 = np.maximum(b2, 0.0)
        logits, s_head = self.head.forward(r2)
        saved = (x, a1, b1, r1, a2, b2, r2, s_conv1, s_norm1, s_conv2, s_norm2, s_head)
        return logits.reshape(len(x), 10), saved

    def backward(self, dlogits, saved):
        """Fills every layer's gradient state; returns the (layer, state) pairs to update."""
        x, a1, b1, r1, a2, b2, r2, s_conv1, s_norm1, s_conv2, s_norm2, s_head = saved
        dr2 = self.head_grad.backward(dlogits.reshape(-1, 1, 1, 10), r2, s_head)
        da2 = self.norm2_grad.backward(dr2 * (b2 > 0), a2, s_norm2)
        dr1 = self.conv2_grad.backward(da2, r1, s_conv2)
        da1 = self.norm1_grad.backward(dr1 * (b1 > 0), a1, s_norm1)
        self.conv1_grad.backward(da1, x, s_conv1)
        return [
            (self.conv1, s_conv1),
            (self.norm1, s_norm1),
            (self.conv2, s_conv2),
            (self.norm2, s_norm2),
            (self.head, s_head),
        ]

    def predict(self, x):
        return self.forward(x)[0].argmax(axis=1)


def softmax_cross_entropy(logits, labels):
    """The mean loss over the batch and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    dlogits = np.exp(log_p)
    dlogits[rows, labels] -= 1.0
    return float(-log_p[rows, labels].mean()), (dlogits / len(labels)).astype(F32)


def progress(epoch, epochs, done, total, loss, width=30):
    filled = width * done // total
    bar = "#" * filled + "." * (width - filled)
    sys.stdout.write(f"\repoch {epoch:2d}/{epochs}  [{bar}] {done:4d}/{total}  loss {loss:.4f}")
    sys.stdout.flush()


def train(epochs=12, batch_size=32, learning_rate=3e-3, seed=0, out=sys.stdout):
    """Trains the network; returns the final test accuracy."""
    x_train, y_train, x_test, y_test = split(*load_digits(), seed=seed)
    rng = np.random.default_rng(seed)
    net = Network(rng)
    optimizer = gs.optim.Adam(learning_rate)
    interactive = out.isatty()
    print(
        f"gradstate {gs.__version__} on {gs.default_device().type} ({gs.cpu_info()['chosen']}, "
        f"{gs.get_num_threads()} threads): {len(y_train)} training and {len(y_test)} test digits",
        file=out,
    )
    start = time.perf_counter()
    accuracy = 0.0
    for epoch in range(1, epochs + 1):
        # Cosine decay of the learning rate over the run.
        optimizer.learning_rate = learning_rate * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / epochs))
        order = rng.permutation(len(y_train))
        losses = []
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            logits, saved = net.forward(x_train[batch])
            loss, dlogits = softmax_cross_entropy(logits, y_train[batch])
            for layer, state in net.backward(dlogits, saved):
                optimizer.step(layer, state)
            losses.append(loss)
            if interactive:
                progress(epoch, epochs, min(first + batch_size, len(order)), len(order), np.mean(losses))
        accuracy = float((net.predict(x_test) == y_test).mean())
        line = (
            f"epoch {epoch:2d}/{epochs}  loss {np.mean(losses):.4f}  test accuracy {100 * accuracy:5.1f}%  "
            f"({time.perf_counter() - start:5.1f} s)"
        )
        print(f"\r{line:<80}" if interactive else line, file=out, flush=True)
    print(
        f"test accuracy {100 * accuracy:.1f}% after {epochs} epochs in {time.perf_counter() - start:.1f} s "
        f"(target {100 * TARGET_ACCURACY:.0f}%)",
        file=out,
    )
    return accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m gradstate.examples.train_digits", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    accuracy = train(args.epochs, args.batch_size, args.learning_rate, args.seed)
    return 0 if accuracy >= TARGET_ACCURACY else 1


if __name__ == "__main__":
    sys.exit(main())
