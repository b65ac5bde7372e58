"""W6 on Grain (see common.py for the workload and the timing).

    --api dataloader (default):
        grain.python.DataLoader(data_source=paths, operations=[Decode()], worker_count=2,
            sampler=IndexSampler(len(paths), shard_options=NoSharding(), shuffle=False,
                                 num_epochs=1))
        Decode is a grain.python.MapTransform whose map() is pil_decode; paths is a list
        (random access: __len__, __getitem__); worker_buffer_size and read options default.
    --api dataset:
        grain.MapDataset.source(paths).map(pil_decode).to_iter_dataset()
            .mp_prefetch(grain.MultiprocessingOptions(num_workers=2))

    python w6_grain.py --data-dir bench-data/jpeg --api dataloader
"""

import argparse
from importlib.metadata import version

import grain
import grain.python as gp

from common import emit, pil_decode, run, set_transform, w6_paths


class Decode(gp.MapTransform):
    def map(self, path):
        return pil_decode(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="bench-data/jpeg")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--api", choices=["dataloader", "dataset"], default="dataloader")
    ap.add_argument("--transform", choices=["resize", "eval", "rrc"], default="resize")
    args = ap.parse_args()
    set_transform(args.transform)
    paths = w6_paths(args.data_dir, args.repeat)

    if args.api == "dataloader":
        def make():
            sampler = gp.IndexSampler(
                len(paths), shard_options=gp.NoSharding(), shuffle=False, num_epochs=1
            )
            return gp.DataLoader(
                data_source=paths, sampler=sampler, operations=[Decode()],
                worker_count=args.num_workers,
            )
    else:
        def make():
            return (
                grain.MapDataset.source(paths)
                .map(pil_decode)
                .to_iter_dataset()
                .mp_prefetch(grain.MultiprocessingOptions(num_workers=args.num_workers))
            )

    result = run(make, len(paths))
    emit(f"grain {version('grain')} {args.api}", f"num_workers={args.num_workers}", result, vars(args))


if __name__ == "__main__":
    main()
