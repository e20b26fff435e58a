"""The ``tiny`` ground-truth preset.

End to end in about a minute of training plus ~40 s of compiles on 2 idle cores: the tests run
it, and scripts/make_example_bank.py builds the packaged example bank from it (3 sources x 4
architectures on coil20, n = 300).
"""

from parc_jax.groundtruth.presets import Preset
from parc_jax.groundtruth.train import TrainConfig


def get_config() -> Preset:
    return Preset(
        name="tiny",
        sources=("mnist", "usps", "cifar10"),
        targets=("coil20",),
        source=TrainConfig(epochs=6, batch_size=64),
        source_lr=0.2,
        finetune=TrainConfig(epochs=4, batch_size=64),
        finetune_lrs=(0.03, 0.1, 0.3),
        scratch=TrainConfig(epochs=4, batch_size=64),
        scratch_lrs=(0.03, 0.1, 0.3),
        image_size=16,
        width=8,
        head_width=24,
        max_source_train=1024,
        max_target_train=384,
        max_val=100,
        max_test=200,
        probe_size=300,
        probe_runs=1,
    )
