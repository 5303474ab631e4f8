"""Training curves as a PNG (matplotlib, an optional dependency imported when drawing; Agg
backend: no display needed)."""
from __future__ import annotations

import os

from funcnn.core import extras


def training_curves(history: dict, path: str | os.PathLike, title: str = "") -> None:
    """Draw ``fit``'s history to a PNG at ``path``: loss (train minibatch, train, test; log
    scale) and accuracy (train, test) per epoch, side by side.

    **Arguments:**

    - `history`: ``FitResult.history``: lists of one value per epoch under ``loss``,
      ``train_loss``, ``test_loss``, ``train_acc``, ``test_acc``.
    - `path`: the PNG file to write; `title`: the figure's title (none if empty).
    """
    plt = extras.pyplot("the training curves")

    epochs = range(1, len(history["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["loss"], label="minibatch (train mode)")
    ax_loss.plot(epochs, history["train_loss"], label="train")
    ax_loss.plot(epochs, history["test_loss"], label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    ax_acc.plot(epochs, history["train_acc"], label="train")
    ax_acc.plot(epochs, history["test_acc"], label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lm_curves(history: dict, path: str | os.PathLike, title: str = "") -> None:
    """The language model's curves as a PNG: the mean training loss since the last evaluation
    and the validation loss (nats/char) against the step.

    **Arguments:**

    - `history`: `{"step": [...], "train_loss": [...], "val_loss": [...]}`, equal lengths.
    - `path`: the file to write (PNG).
    - `title`: the figure's title.
    """
    plt = extras.pyplot("the language model's curves")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["step"], history["train_loss"], label="train (mean since last evaluation)")
    ax.plot(history["step"], history["val_loss"], label="validation")
    ax.set(xlabel="step", ylabel="nats/char", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
