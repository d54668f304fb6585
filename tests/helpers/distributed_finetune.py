"""Runs `run_finetune_balanced.py` (its `main`) with the given flags and writes, per process, the final weights and
the test predictions it ended with. Run by tests/test_distributed.py under `torchrun --nproc_per_node 2`.

    distributed_finetune.py OUT_DIR [flags of run_finetune_balanced.py …]
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import run_finetune_balanced  # noqa: E402
from threads import live_thread_names  # noqa: E402


def main(out_dir: str, *flags: str) -> None:
    sys.argv = ["run_finetune_balanced.py", *flags]
    trainer, test = run_finetune_balanced.main()
    weights = {k: v.detach().cpu() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
    record = {"world": trainer.args.world_size, "weights": weights,
              "predictions": torch.as_tensor(test.predictions), "label_ids": torch.as_tensor(test.label_ids)}  # fmt: skip
    rank = trainer.args.process_index
    trainer.end_training()
    record["threads_at_exit"] = live_thread_names()
    torch.save(record, Path(out_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(*sys.argv[1:])
