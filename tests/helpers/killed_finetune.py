"""Runs `run_finetune_balanced.py` (its `main`) with the given flags; the process SIGKILLs itself, as an
out-of-memory kill or a pre-empted node would, right after optimizer step KILL_AT_STEP, or half-way through writing
the checkpoint of step KILL_WHILE_SAVING_STEP (weights and optimizer written, RNG and trainer state not). Run by
tests/test_resume.py.

    KILL_AT_STEP=18 killed_finetune.py [flags of run_finetune_balanced.py …]
"""

import os
import signal
import sys
from pathlib import Path

from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import run_finetune_balanced  # noqa: E402


class KillAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KilledTrainer(run_finetune_balanced.BalancedTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "KILL_AT_STEP" in os.environ:
            self.add_callback(KillAtStep(int(os.environ["KILL_AT_STEP"])))

    def _save_optimizer_and_scheduler(self, output_dir):
        super()._save_optimizer_and_scheduler(output_dir)
        if self.state.global_step == int(os.environ.get("KILL_WHILE_SAVING_STEP", -1)):
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    run_finetune_balanced.BalancedTrainer = KilledTrainer
    sys.argv = ["run_finetune_balanced.py", *sys.argv[1:]]
    run_finetune_balanced.main()
