"""The ``mini`` ground-truth preset.

The committed benchmark (PARC paper Sec. 3.1 in miniature): 8 sources x 4 architectures x 6
targets without self-transfer = 168 transfers, plus orl and pneumonia as extra targets (64
transfers). Sized for < 2 h on 2 CPU cores: see benchmarks/groundtruth.
"""

from parc_jax.groundtruth.presets import Preset
from parc_jax.groundtruth.train import TrainConfig

_MNIST_LIKE = ("mnist", "usps", "notmnist", "omniglot1", "omniglot2", "cifar10", "coil20")


def get_config() -> Preset:
    return Preset(
        name="mini",
        sources=_MNIST_LIKE[:5] + ("cifar10", "coil20", "animal_silhouettes"),
        targets=(
            "usps",
            "notmnist",
            "omniglot2",
            "cifar10",
            "coil20",
            "animal_silhouettes",
            "orl",
            "pneumonia",
        ),
        source=TrainConfig(epochs=8, batch_size=128, min_steps=250),
        source_lr=0.1,
        finetune=TrainConfig(epochs=4, batch_size=128, min_steps=40),
        finetune_lrs=(0.03, 0.1, 0.3),
        scratch=TrainConfig(epochs=4, batch_size=128, min_steps=40),
        scratch_lrs=(0.03, 0.1, 0.3),
        image_size=16,
        width=8,
        head_width=160,
        max_source_train=4000,
        max_target_train=1000,
        max_val=500,
        probe_size=500,
        probe_runs=5,
    )
