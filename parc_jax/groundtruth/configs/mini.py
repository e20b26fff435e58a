"""The ``mini`` ground-truth preset.

The committed benchmark (PARC paper Sec. 3.1 in miniature). Every architecture is first
pretrained on a pool of three datasets that are never targets (mnist, omniglot1, omniglot2:
digits and handwritten characters of ten alphabets, 302 classes), as the paper's models all
start from ImageNet weights; then trained on each of 8 sources. 7 targets, every transfer
except self-transfers: 200 fine-tuning runs over a learning-rate grid that extends while its
best rate is at an edge. omniglot2 is not a target: with ~5 training images per class at
16 x 16, its transfers landed within a few points of chance. Runs on a target (fine-tuning,
from scratch, references) use the class-balanced loss and are chosen on balanced validation
accuracy: pneumonia trains on 88 % one class, and without it a mixer predicted that class at
every learning rate. Ran in 40 min on 2 CPU cores:
see benchmarks/groundtruth.
"""

from parc_jax.groundtruth.presets import Preset
from parc_jax.groundtruth.train import TrainConfig


def get_config() -> Preset:
    return Preset(
        name="mini",
        pool=("mnist", "omniglot1", "omniglot2"),
        pretrain=TrainConfig(epochs=12, batch_size=128),
        pretrain_lr=0.1,
        max_pool_train=4000,
        sources=(
            "mnist",
            "usps",
            "notmnist",
            "omniglot1",
            "cifar10",
            "coil20",
            "animal_silhouettes",
            "pneumonia",
        ),
        targets=("usps", "notmnist", "cifar10", "coil20", "animal_silhouettes", "orl", "pneumonia"),
        source=TrainConfig(epochs=6, batch_size=128, min_steps=150),
        source_lr=0.05,
        finetune=TrainConfig(epochs=4, batch_size=128, min_steps=40, class_balanced=True),
        finetune_lrs=(0.01, 0.03, 0.1),
        scratch=TrainConfig(epochs=4, batch_size=128, min_steps=40, class_balanced=True),
        scratch_lrs=(0.03, 0.1, 0.3),
        lr_extend=2,
        reference_epochs=(2, 4),
        reference_tolerance=1.0,
        image_size=16,
        width=8,
        head_width=160,
        max_source_train=4000,
        max_target_train=1000,
        max_val=500,
        probe_size=500,
        probe_runs=5,
    )
