"""Finding the paper's data: a local root (the ../shared/data layout or the less_data layout) or,
when ``data.root`` is unset, a download of ``data.hub_repo`` (princeton-nlp/less_data) from the hub."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from less.errors import DataError


def data_root(data_cfg: DictConfig, what: str, patterns: list[str]) -> Path:
    """The local root to read ``what`` from; downloads the needed files from the hub if no root is set."""
    if data_cfg.get("root"):
        root = Path(str(data_cfg.root)).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"{root}: data directory not found (set by data.root)")
        return root
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=data_cfg.hub_repo, repo_type="dataset",
                                      allow_patterns=patterns))
    except Exception as e:  # offline, gated, missing: one line naming both settings
        raise DataError(f"cannot load {what} from the hub ({data_cfg.hub_repo}: {type(e).__name__}); "
                        f"set data.root to a local copy") from None


def find(root: Path, candidates: list[str], what: str) -> Path:
    """The first existing candidate path under ``root``, else an error naming all of them."""
    for c in candidates:
        if (root / c).exists():
            return root / c
    raise DataError(f"{root}: no {what} found (looked for {', '.join(candidates)}; set by data.root)")
