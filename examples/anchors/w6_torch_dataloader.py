"""W6 on PyTorch's `torch.utils.data.DataLoader` (see common.py for the workload and the timing).

    DataLoader(PathDataset(paths), num_workers=2, batch_size=None)     # --batch-size 0
    DataLoader(PathDataset(paths), num_workers=2, batch_size=32)       # default collate

PathDataset is a map-style dataset of paths (`__getitem__(i)` = pil_decode(paths[i]));
shuffle=False, the default multiprocessing context (fork on Linux), the default
prefetch_factor (2), pin_memory=False, persistent_workers=False. With batch_size=None the
default `default_convert` turns each array into a tensor; with 32 the default collate stacks
32 of them into one (32, 224, 224, 3) uint8 tensor (the last batch has 8).

    python w6_torch_dataloader.py --data-dir bench-data/jpeg --batch-size 32
"""

import argparse

import torch
from torch.utils.data import DataLoader, Dataset

from common import emit, pil_decode, run, set_transform, w6_paths


class PathDataset(Dataset):
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return pil_decode(self.paths[i])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="bench-data/jpeg")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=0, help="0: batch_size=None")
    ap.add_argument("--transform", choices=["resize", "eval", "rrc"], default="resize")
    args = ap.parse_args()
    set_transform(args.transform)
    paths = w6_paths(args.data_dir, args.repeat)
    batch_size = args.batch_size or None
    result = run(
        lambda: DataLoader(PathDataset(paths), num_workers=args.num_workers, batch_size=batch_size),
        len(paths),
    )
    emit(
        f"torch {torch.__version__} DataLoader",
        f"num_workers={args.num_workers} batch_size={batch_size}",
        result,
        vars(args),
    )


if __name__ == "__main__":
    main()
