"""The names of this process's OS threads after a run has ended: gloo's must be gone by then, or one of them can
abort the finished process at interpreter shutdown (issue 15; `LiVTTrainer.end_training` says why). Run as a script
under `torchrun --nproc_per_node 2`, it runs SCRIPT as `__main__` and then writes this rank's thread names:

    threads.py SCRIPT OUT_DIR [flags of SCRIPT …]
"""

import json
import os
import runpy
import sys
from pathlib import Path

GLOO_THREADS = {"pt_gloo_runloop", "gloo_tcp_loop"}  # ProcessGroupGloo's workers, gloo's TCP event loop


def live_thread_names() -> list[str]:
    return sorted(Path(task, "comm").read_text().strip() for task in Path("/proc/self/task").iterdir())


if __name__ == "__main__":
    script, out_dir, *flags = sys.argv[1:]
    sys.argv = [script, *flags]
    sys.path.insert(0, str(Path(script).parent))
    runpy.run_path(script, run_name="__main__")
    Path(out_dir, f"threads_rank{os.environ['RANK']}.json").write_text(json.dumps(live_thread_names()))
