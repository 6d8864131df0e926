"""The one entrypoint: `python run.py [overrides]` or `python run.py -m [sweep overrides]`."""

import hydra
from omegaconf import DictConfig

from less.runner import run


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
