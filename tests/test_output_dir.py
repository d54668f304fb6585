"""Re-running into an output folder: a finished run is never overwritten silently, an unfinished one is continued
or replaced only when asked, and a checkpoint that a kill left half-written is never resumed from."""

import pytest

from livt_hf.arguments import FinetuningArguments
from livt_hf.runs import COMPLETE_MARKER, FINISHED_MARKER, resolve_checkpoint
from test_trainer import parse


def args_for(out, *flags):
    return parse(FinetuningArguments, "--output_dir", str(out), *flags)


def checkpoint(out, step, complete=True):
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    if complete:
        (folder / COMPLETE_MARKER).touch()
    return folder


def test_a_new_or_empty_folder_starts_a_run(tmp_path):
    assert resolve_checkpoint(args_for(tmp_path / "new")) is None
    (tmp_path / "empty").mkdir()
    assert resolve_checkpoint(args_for(tmp_path / "empty")) is None


def test_a_finished_run_is_refused_unless_overwritten(tmp_path):
    (tmp_path / FINISHED_MARKER).write_text("{}")
    with pytest.raises(FileExistsError, match="holds a finished run. Pick another --output_dir, or pass --overwrite"):
        resolve_checkpoint(args_for(tmp_path))
    assert (tmp_path / FINISHED_MARKER).exists()
    assert resolve_checkpoint(args_for(tmp_path, "--overwrite_output_dir", "1")) is None
    assert not tmp_path.exists()  # replaced: deleted before the new run writes anything


def test_an_unfinished_run_is_continued_or_refused(tmp_path):
    checkpoint(tmp_path, 4)
    checkpoint(tmp_path, 8)
    with pytest.raises(FileExistsError, match="checkpoints of an unfinished run. Continue it with --resume_from_checkpoint last"):
        resolve_checkpoint(args_for(tmp_path))
    assert resolve_checkpoint(args_for(tmp_path, "--resume_from_checkpoint", "last")) == str(tmp_path / "checkpoint-8")
    assert resolve_checkpoint(args_for(tmp_path, "--resume_from_checkpoint", str(tmp_path / "checkpoint-4"))) == str(
        tmp_path / "checkpoint-4"
    )


def test_a_half_written_checkpoint_is_skipped_and_removed(tmp_path):
    checkpoint(tmp_path, 4)
    checkpoint(tmp_path, 10)  # steps compare as numbers, not strings
    half = checkpoint(tmp_path, 12, complete=False)
    with pytest.raises(FileNotFoundError, match="was not completely written .* --resume_from_checkpoint last"):
        resolve_checkpoint(args_for(tmp_path, "--resume_from_checkpoint", str(half)))
    assert resolve_checkpoint(args_for(tmp_path, "--resume_from_checkpoint", "last")) == str(tmp_path / "checkpoint-10")
    assert not half.exists() and (tmp_path / "checkpoint-4").exists()


def test_resuming_needs_a_checkpoint(tmp_path):
    checkpoint(tmp_path, 3, complete=False)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint-\\* folder"):
        resolve_checkpoint(args_for(tmp_path, "--resume_from_checkpoint", "last"))
    with pytest.raises(FileNotFoundError, match="is not a checkpoint folder"):
        resolve_checkpoint(args_for(tmp_path, "--resume_from_checkpoint", str(tmp_path / "nowhere")))
