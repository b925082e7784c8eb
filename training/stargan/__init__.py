"""Camera-style transfer with StarGAN: one generator translates a target-domain image to the
style of each target camera (METHOD.md, "Camera-style transfer"; docs/camstyle.md)."""

from training.stargan.checkpoint import CHECKPOINT_NAME, StarGANCheckpoint, load_stargan, save_stargan
from training.stargan.generation import GenerateSummary, generate_camstyle, sheet_rows, write_sample_sheet
from training.stargan.model import Discriminator, DiscriminatorOutput, Generator, StarGANConfig
from training.stargan.trainer import TrainConfig, TrainSummary, lr_factor, train_stargan

__all__ = [
    "CHECKPOINT_NAME", "StarGANCheckpoint", "load_stargan", "save_stargan",
    "GenerateSummary", "generate_camstyle", "sheet_rows", "write_sample_sheet",
    "Discriminator", "DiscriminatorOutput", "Generator", "StarGANConfig",
    "TrainConfig", "TrainSummary", "lr_factor", "train_stargan",
]
