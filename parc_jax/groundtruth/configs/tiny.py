"""The ``tiny`` ground-truth preset.

The ``mini`` protocol at test size: each architecture pretrained on a small pool (notmnist,
never a target), trained on 3 sources, fine-tuned on coil20 (n = 300) over a grid that extends
at its edges; references trained to the same convergence rule. End to end in about a minute
and a half of training plus compiles on 2 idle cores: the tests run it, and
scripts/make_example_bank.py builds the packaged example bank from it.
"""

from parc_jax.groundtruth.presets import Preset
from parc_jax.groundtruth.train import TrainConfig


def get_config() -> Preset:
    return Preset(
        name="tiny",
        pool=("notmnist",),
        pretrain=TrainConfig(epochs=3, batch_size=64),
        pretrain_lr=0.1,
        max_pool_train=1024,
        sources=("mnist", "usps", "cifar10"),
        targets=("coil20",),
        source=TrainConfig(epochs=4, batch_size=64),
        source_lr=0.1,
        finetune=TrainConfig(epochs=4, batch_size=64, class_balanced=True),
        finetune_lrs=(0.03, 0.1, 0.3),
        scratch=TrainConfig(epochs=4, batch_size=64, class_balanced=True),
        scratch_lrs=(0.03, 0.1, 0.3),
        lr_extend=1,
        reference_epochs=(2,),
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
